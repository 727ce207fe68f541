//! Import files: what each line of an NDJSON or CSV file becomes before the ordinary
//! validation of customers, products or events runs on it.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ImportKind {
    Customers,
    Products,
    Events,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ImportFormat {
    Ndjson,
    Csv,
}

/// How a CSV cell becomes JSON for a column of this kind. Column names with dots nest
/// (`consent.email`); list columns split on `;`.
fn cell(kind: ImportKind, column: &str, raw: &str) -> Option<Value> {
    if raw.is_empty() {
        return None;
    }
    let number = |s: &str| {
        s.parse::<i64>()
            .map(Value::from)
            .or_else(|_| s.parse::<f64>().map(Value::from))
            .unwrap_or_else(|_| Value::String(s.to_owned()))
    };
    let boolean = |s: &str| match s.to_ascii_lowercase().as_str() {
        "true" | "yes" | "1" => Value::Bool(true),
        "false" | "no" | "0" => Value::Bool(false),
        _ => Value::String(s.to_owned()),
    };
    let list = |s: &str| {
        Value::Array(
            s.split(';')
                .map(|x| Value::String(x.trim().to_owned()))
                .filter(|v| v != "")
                .collect(),
        )
    };
    Some(match (kind, column) {
        (ImportKind::Customers, "birth_year") => number(raw),
        (ImportKind::Customers, c) if c.starts_with("consent.") => boolean(raw),
        (ImportKind::Products, "price") => number(raw),
        (ImportKind::Products, "in_stock") => boolean(raw),
        (ImportKind::Products, "tags") => list(raw),
        (ImportKind::Events, "revenue") => number(raw),
        (ImportKind::Events, "product_ids") => list(raw),
        (ImportKind::Events, "timestamp")
            if raw.chars().all(|c| c.is_ascii_digit() || c == '.') =>
        {
            number(raw)
        }
        _ => Value::String(raw.to_owned()),
    })
}

/// A CSV record as the JSON object the API would take, nesting dotted columns.
pub fn csv_record(
    kind: ImportKind,
    header: &[String],
    record: &csv::StringRecord,
) -> Result<Value, String> {
    if record.len() != header.len() {
        return Err(format!(
            "has {} fields; the header has {}",
            record.len(),
            header.len()
        ));
    }
    let mut object = Map::new();
    for (column, raw) in header.iter().zip(record.iter()) {
        let Some(value) = cell(kind, column, raw.trim()) else {
            continue;
        };
        match column.split_once('.') {
            Some((parent, child)) => {
                let entry = object
                    .entry(parent.to_owned())
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(inner) = entry {
                    inner.insert(child.to_owned(), value);
                }
            }
            None => {
                object.insert(column.clone(), value);
            }
        }
    }
    Ok(Value::Object(object))
}

/// Parses one CSV line (no embedded newlines: the upload is split on lines).
pub fn csv_fields(line: &str) -> Result<csv::StringRecord, String> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(line.as_bytes());
    match reader.records().next() {
        Some(Ok(record)) => Ok(record),
        Some(Err(e)) => Err(format!("is not valid CSV: {e}")),
        None => Ok(csv::StringRecord::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn csv_cells_become_typed_nested_json() {
        let header: Vec<String> = [
            "external_id",
            "email",
            "birth_year",
            "consent.email",
            "traits.plan",
        ]
        .map(String::from)
        .to_vec();
        let record = csv_fields(r#"c1,"Ada@Example.com",1985,yes,gold"#).expect("csv");
        let value = csv_record(ImportKind::Customers, &header, &record).expect("record");
        assert_eq!(
            value,
            json!({"external_id": "c1", "email": "Ada@Example.com", "birth_year": 1985,
                   "consent": {"email": true}, "traits": {"plan": "gold"}})
        );
        let events: Vec<String> = ["event_id", "product_ids", "revenue", "timestamp"]
            .map(String::from)
            .to_vec();
        let record = csv_fields("e1,a;b,9.5,1795000000").expect("csv");
        let value = csv_record(ImportKind::Events, &events, &record).expect("record");
        assert_eq!(value["product_ids"], json!(["a", "b"]));
        assert_eq!(value["revenue"], json!(9.5));
        assert!(
            csv_record(
                ImportKind::Events,
                &events,
                &csv_fields("e1,x").expect("csv")
            )
            .is_err()
        );
    }
}
