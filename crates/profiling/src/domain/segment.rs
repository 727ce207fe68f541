//! The segment rule language: a JSON tree of `all` / `any` / `not` over conditions on
//! whitelisted fields and on event counts. Parsing validates everything and names the
//! offending path; `db::segments` compiles the tree to SQL with every value bound.
//!
//! ```json
//! {"all": [
//!   {"field": "rfm.segment", "op": "in", "value": ["champions", "loyal"]},
//!   {"field": "consent.email", "op": "eq", "value": true},
//!   {"not": {"field": "country", "op": "eq", "value": "US"}},
//!   {"event": "purchase", "within_days": 30, "op": "gte", "count": 2},
//!   {"field": "traits.plan", "op": "eq", "value": "gold"}
//! ]}
//! ```

use mercato_platform::error::FieldError;
use serde_json::Value;

const MAX_DEPTH: usize = 8;
const MAX_CONDITIONS: usize = 100;
const MAX_LIST: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    Number,
    Bool,
}

/// A field a rule may name, with the column of the facts view it reads. The column names
/// come from this list only, never from the request.
#[derive(Debug, Clone, PartialEq)]
pub enum Field {
    Column {
        column: &'static str,
        kind: Kind,
    },
    /// `traits.<key>`: the key is bound as a parameter.
    Trait {
        key: String,
        kind: Kind,
    },
}

impl Field {
    pub fn kind(&self) -> Kind {
        match self {
            Field::Column { kind, .. } | Field::Trait { kind, .. } => *kind,
        }
    }
}

/// (name in rules, facts column, kind).
pub const FIELDS: &[(&str, &str, Kind)] = &[
    ("external_id", "external_id", Kind::Text),
    ("email", "email", Kind::Text),
    ("phone", "phone", Kind::Text),
    ("first_name", "first_name", Kind::Text),
    ("last_name", "last_name", Kind::Text),
    ("locale", "locale", Kind::Text),
    ("country", "country", Kind::Text),
    ("birth_year", "birth_year", Kind::Number),
    ("consent.email", "consent_email", Kind::Bool),
    ("consent.sms", "consent_sms", Kind::Bool),
    ("consent.push", "consent_push", Kind::Bool),
    ("consent.ai_personalization", "consent_ai", Kind::Bool),
    ("profile.recency_days", "recency_days", Kind::Number),
    ("profile.frequency", "frequency", Kind::Number),
    ("profile.monetary", "monetary", Kind::Number),
    ("profile.average_order_value", "aov", Kind::Number),
    ("profile.event_count", "event_count", Kind::Number),
    (
        "profile.days_since_last_activity",
        "last_activity_days",
        Kind::Number,
    ),
    ("profile.preferred_channel", "preferred_channel", Kind::Text),
    ("profile.best_hour", "best_hour", Kind::Number),
    ("profile.cluster", "cluster", Kind::Number),
    ("rfm.r", "rfm_r", Kind::Number),
    ("rfm.f", "rfm_f", Kind::Number),
    ("rfm.m", "rfm_m", Kind::Number),
    ("rfm.segment", "rfm_segment", Kind::Text),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Neq,
    Gt,
    Gte,
    Lt,
    Lte,
    In,
    NotIn,
    Contains,
    StartsWith,
    Exists,
}

impl Op {
    fn parse(s: &str) -> Option<Op> {
        Some(match s {
            "eq" => Op::Eq,
            "neq" => Op::Neq,
            "gt" => Op::Gt,
            "gte" => Op::Gte,
            "lt" => Op::Lt,
            "lte" => Op::Lte,
            "in" => Op::In,
            "not_in" => Op::NotIn,
            "contains" => Op::Contains,
            "starts_with" => Op::StartsWith,
            "exists" => Op::Exists,
            _ => return None,
        })
    }

    fn allowed_for(self, kind: Kind) -> bool {
        match kind {
            Kind::Text => !matches!(self, Op::Gt | Op::Gte | Op::Lt | Op::Lte),
            Kind::Number => !matches!(self, Op::Contains | Op::StartsWith),
            Kind::Bool => matches!(self, Op::Eq | Op::Neq | Op::Exists),
        }
    }

    /// The SQL comparison operator for the ordered comparisons.
    pub fn sql(self) -> &'static str {
        match self {
            Op::Eq => "=",
            Op::Neq => "<>",
            Op::Gt => ">",
            Op::Gte => ">=",
            Op::Lt => "<",
            Op::Lte => "<=",
            _ => "=",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    Text(String),
    Number(f64),
    Bool(bool),
    Texts(Vec<String>),
    Numbers(Vec<f64>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Rule {
    All(Vec<Rule>),
    Any(Vec<Rule>),
    Not(Box<Rule>),
    Condition {
        field: Field,
        op: Op,
        value: Operand,
    },
    EventCount {
        event_type: String,
        within_days: Option<i32>,
        op: Op,
        count: i64,
    },
}

struct Parser {
    conditions: usize,
}

/// Parses and validates a rule; errors name the JSON path (`rule.all[2].op`).
pub fn parse(value: &Value) -> Result<Rule, FieldError> {
    let mut parser = Parser { conditions: 0 };
    parser.rule(value, "rule", 0)
}

fn err(path: &str, message: impl Into<String>) -> FieldError {
    FieldError::new(path, message)
}

impl Parser {
    fn rule(&mut self, value: &Value, path: &str, depth: usize) -> Result<Rule, FieldError> {
        if depth > MAX_DEPTH {
            return Err(err(path, format!("rules nest at most {MAX_DEPTH} deep")));
        }
        let obj = value
            .as_object()
            .ok_or_else(|| err(path, "must be an object"))?;
        let only = |keys: &[&str]| -> Result<(), FieldError> {
            match obj.keys().find(|k| !keys.contains(&k.as_str())) {
                Some(k) => Err(err(
                    &format!("{path}.{k}"),
                    format!("unknown key; expected {}", keys.join(", ")),
                )),
                None => Ok(()),
            }
        };
        if let Some(list) = obj.get("all").or_else(|| obj.get("any")) {
            let is_all = obj.contains_key("all");
            let key = if is_all { "all" } else { "any" };
            only(&[key])?;
            let items = list
                .as_array()
                .ok_or_else(|| err(&format!("{path}.{key}"), "must be a list of rules"))?;
            if items.is_empty() {
                return Err(err(&format!("{path}.{key}"), "must hold at least one rule"));
            }
            let rules = items
                .iter()
                .enumerate()
                .map(|(i, r)| self.rule(r, &format!("{path}.{key}[{i}]"), depth + 1))
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(if is_all {
                Rule::All(rules)
            } else {
                Rule::Any(rules)
            });
        }
        if let Some(inner) = obj.get("not") {
            only(&["not"])?;
            return Ok(Rule::Not(Box::new(self.rule(
                inner,
                &format!("{path}.not"),
                depth + 1,
            )?)));
        }
        self.conditions += 1;
        if self.conditions > MAX_CONDITIONS {
            return Err(err(
                path,
                format!("a rule holds at most {MAX_CONDITIONS} conditions"),
            ));
        }
        if obj.contains_key("event") {
            only(&["event", "within_days", "op", "count"])?;
            return self.event_count(obj, path);
        }
        if obj.contains_key("field") {
            only(&["field", "op", "value"])?;
            return self.condition(obj, path);
        }
        Err(err(
            path,
            "must be one of {all}, {any}, {not}, a field condition or an event condition",
        ))
    }

    fn condition(
        &mut self,
        obj: &serde_json::Map<String, Value>,
        path: &str,
    ) -> Result<Rule, FieldError> {
        let name = obj
            .get("field")
            .and_then(Value::as_str)
            .ok_or_else(|| err(&format!("{path}.field"), "must be a string"))?;
        let field = if let Some(key) = name.strip_prefix("traits.") {
            if key.is_empty() || key.len() > 64 {
                return Err(err(
                    &format!("{path}.field"),
                    "trait keys are 1 to 64 characters",
                ));
            }
            // A trait's kind follows the value it is compared with.
            let kind = match obj.get("value") {
                Some(Value::Number(_)) => Kind::Number,
                Some(Value::Bool(_)) => Kind::Bool,
                Some(Value::Array(a)) if a.first().is_some_and(Value::is_number) => Kind::Number,
                _ => Kind::Text,
            };
            Field::Trait {
                key: key.to_owned(),
                kind,
            }
        } else {
            let (_, column, kind) = FIELDS.iter().find(|(n, _, _)| *n == name).ok_or_else(|| {
                err(&format!("{path}.field"), format!("unknown field `{name}`; see the segment rule documentation for the fields"))
            })?;
            Field::Column {
                column,
                kind: *kind,
            }
        };
        let op_name = obj
            .get("op")
            .and_then(Value::as_str)
            .ok_or_else(|| err(&format!("{path}.op"), "must be a string"))?;
        let op = Op::parse(op_name).ok_or_else(|| {
            err(
                &format!("{path}.op"),
                format!("unknown operator `{op_name}`"),
            )
        })?;
        if !op.allowed_for(field.kind()) {
            return Err(err(
                &format!("{path}.op"),
                format!("`{op_name}` does not apply to `{name}`"),
            ));
        }
        let value_path = format!("{path}.value");
        let value = obj
            .get("value")
            .ok_or_else(|| err(&value_path, "is required"))?;
        let operand = operand(field.kind(), op, value, &value_path)?;
        Ok(Rule::Condition {
            field,
            op,
            value: operand,
        })
    }

    fn event_count(
        &mut self,
        obj: &serde_json::Map<String, Value>,
        path: &str,
    ) -> Result<Rule, FieldError> {
        let event_type = obj
            .get("event")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty() && t.len() <= 110)
            .ok_or_else(|| err(&format!("{path}.event"), "must be an event type"))?;
        let within_days = match obj.get("within_days") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_i64()
                    .filter(|d| (1..=3650).contains(d))
                    .ok_or_else(|| err(&format!("{path}.within_days"), "must be 1 to 3650"))?
                    as i32,
            ),
        };
        let op_name = obj.get("op").and_then(Value::as_str).unwrap_or("gte");
        let op = Op::parse(op_name)
            .filter(|o| matches!(o, Op::Eq | Op::Neq | Op::Gt | Op::Gte | Op::Lt | Op::Lte))
            .ok_or_else(|| err(&format!("{path}.op"), "must be eq, neq, gt, gte, lt or lte"))?;
        let count = obj
            .get("count")
            .and_then(Value::as_i64)
            .filter(|c| *c >= 0)
            .ok_or_else(|| err(&format!("{path}.count"), "must be a non-negative integer"))?;
        Ok(Rule::EventCount {
            event_type: event_type.to_owned(),
            within_days,
            op,
            count,
        })
    }
}

fn operand(kind: Kind, op: Op, value: &Value, path: &str) -> Result<Operand, FieldError> {
    if op == Op::Exists {
        return value
            .as_bool()
            .map(Operand::Bool)
            .ok_or_else(|| err(path, "must be true or false for `exists`"));
    }
    if matches!(op, Op::In | Op::NotIn) {
        let items = value
            .as_array()
            .ok_or_else(|| err(path, "must be a list"))?;
        if items.is_empty() || items.len() > MAX_LIST {
            return Err(err(path, format!("must hold 1 to {MAX_LIST} values")));
        }
        return match kind {
            Kind::Number => items
                .iter()
                .map(|v| v.as_f64().ok_or_else(|| err(path, "must hold numbers")))
                .collect::<Result<_, _>>()
                .map(Operand::Numbers),
            _ => items
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| err(path, "must hold strings"))
                })
                .collect::<Result<_, _>>()
                .map(Operand::Texts),
        };
    }
    match kind {
        Kind::Text => value
            .as_str()
            .filter(|s| s.len() <= 1000)
            .map(|s| Operand::Text(s.to_owned()))
            .ok_or_else(|| err(path, "must be a string of at most 1000 characters")),
        Kind::Number => value
            .as_f64()
            .map(Operand::Number)
            .ok_or_else(|| err(path, "must be a number")),
        Kind::Bool => value
            .as_bool()
            .map(Operand::Bool)
            .ok_or_else(|| err(path, "must be true or false")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_nested_rule_parses() {
        let rule = parse(&json!({"all": [
            {"field": "rfm.segment", "op": "in", "value": ["champions"]},
            {"not": {"field": "country", "op": "eq", "value": "US"}},
            {"any": [{"event": "purchase", "within_days": 30, "op": "gte", "count": 2},
                     {"field": "traits.plan", "op": "eq", "value": "gold"}]}
        ]}))
        .expect("valid");
        let Rule::All(items) = rule else {
            panic!("all")
        };
        assert_eq!(items.len(), 3);
    }

    #[test]
    fn errors_name_the_path() {
        let cases = [
            (
                json!({"all": [{"field": "password", "op": "eq", "value": "x"}]}),
                "rule.all[0].field",
            ),
            (
                json!({"all": [{"field": "email", "op": "like", "value": "x"}]}),
                "rule.all[0].op",
            ),
            (
                json!({"any": [{"field": "birth_year", "op": "gt", "value": "1990"}]}),
                "rule.any[0].value",
            ),
            (
                json!({"field": "consent.email", "op": "gt", "value": true}),
                "rule.op",
            ),
            (json!({"all": []}), "rule.all"),
            (json!({"event": "purchase", "count": -1}), "rule.count"),
            (
                json!({"field": "email", "op": "eq", "value": "a", "sql": "1=1"}),
                "rule.sql",
            ),
            (
                json!({"field": "email; DROP TABLE x", "op": "eq", "value": "a"}),
                "rule.field",
            ),
        ];
        for (rule, path) in cases {
            assert_eq!(parse(&rule).expect_err("invalid").field, path, "{rule}");
        }
    }

    #[test]
    fn depth_and_size_are_bounded() {
        let mut deep = json!({"field": "email", "op": "exists", "value": true});
        for _ in 0..10 {
            deep = json!({"not": deep});
        }
        assert!(parse(&deep).is_err());
        let many: Vec<_> = (0..101)
            .map(|_| json!({"field": "email", "op": "exists", "value": true}))
            .collect();
        assert!(parse(&json!({"any": many})).is_err());
    }
}
