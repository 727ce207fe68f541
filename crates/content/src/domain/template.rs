//! Liquid templates per tenant and channel: the safe copy used when generated copy fails its
//! guardrails. Variables: `customer` (`first_name`, `interests`, `segment`), `products` (each
//! `product_id`, `title`, `price` as "49.90", `currency`, `category`), `recommendations` (same
//! shape) and `brief`.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use serde::Serialize;

use crate::domain::channel::{Channel, Fields};

static PARSER: LazyLock<Result<liquid::Parser, String>> = LazyLock::new(|| {
    liquid::ParserBuilder::with_stdlib()
        .build()
        .map_err(|e| e.to_string())
});

fn parser() -> Result<&'static liquid::Parser, String> {
    PARSER.as_ref().map_err(Clone::clone)
}

/// A product as templates see it.
#[derive(Debug, Clone, Serialize)]
pub struct TemplateProduct {
    pub product_id: String,
    pub title: String,
    pub price: String,
    pub currency: String,
    pub category: Option<String>,
}

/// The variables a template is rendered with.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Vars {
    pub customer: TemplateCustomer,
    pub products: Vec<TemplateProduct>,
    pub recommendations: Vec<TemplateProduct>,
    pub brief: String,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct TemplateCustomer {
    pub first_name: Option<String>,
    pub interests: Vec<String>,
    pub segment: Option<String>,
}

/// Problems with a template set, as (field, message).
pub fn validate(channel: Channel, fields: &BTreeMap<String, String>) -> Vec<(String, String)> {
    let mut bad = Vec::new();
    let known: Vec<&str> = channel.fields().iter().map(|f| f.name).collect();
    for spec in channel.fields() {
        if !fields.contains_key(spec.name) {
            bad.push((
                format!("fields.{}", spec.name),
                "is required for this channel".into(),
            ));
        }
    }
    for (name, source) in fields {
        if !known.contains(&name.as_str()) {
            bad.push((
                format!("fields.{name}"),
                format!(
                    "is not a field of {} (fields: {})",
                    channel.as_str(),
                    known.join(", ")
                ),
            ));
            continue;
        }
        if source.len() > 10_000 {
            bad.push((
                format!("fields.{name}"),
                "is longer than 10000 bytes".into(),
            ));
            continue;
        }
        match parser().and_then(|p| p.parse(source).map_err(|e| e.to_string())) {
            Ok(_) => {}
            Err(e) => bad.push((
                format!("fields.{name}"),
                format!("is not valid Liquid: {e}"),
            )),
        }
    }
    bad
}

/// Renders every field of a template set.
pub fn render(fields: &BTreeMap<String, String>, vars: &Vars) -> Result<Fields, String> {
    let globals = liquid::to_object(vars).map_err(|e| e.to_string())?;
    let parser = parser()?;
    let mut out = Fields::new();
    for (name, source) in fields {
        let template = parser.parse(source).map_err(|e| e.to_string())?;
        let text = template.render(&globals).map_err(|e| e.to_string())?;
        out.insert(name.clone(), text.trim().to_string());
    }
    Ok(out)
}

/// The built-in template of a channel, used when the tenant has none: plain, short, and built
/// only from catalog facts, so it passes the guardrails.
pub fn builtin(channel: Channel) -> BTreeMap<String, String> {
    let hi = "Hi{% if customer.first_name %} {{ customer.first_name }}{% endif %}!";
    let offer = "{% if products.size > 0 %}{{ products[0].title }} for {{ products[0].price }} {{ products[0].currency }}{% else %}new picks for you{% endif %}";
    let pairs: Vec<(&str, String)> = match channel {
        Channel::Email => vec![
            ("subject", "{% if customer.first_name %}{{ customer.first_name }}, something{% else %}Something{% endif %} new for you".to_string()),
            (
                "body",
                format!(
                    "Hi{{% if customer.first_name %}} {{{{ customer.first_name }}}}{{% endif %}},\n\nWe have {offer}. Take a look when you have a moment.\n\nThank you for being with us."
                ),
            ),
        ],
        Channel::Sms => vec![("body", format!("{hi} We have {offer}. Reply STOP to opt out."))],
        Channel::Push => vec![
            ("title", "Something new for you".to_string()),
            ("body", format!("{hi} We have {offer}.")),
        ],
        Channel::Ad => vec![
            ("headline", "{% if products.size > 0 %}{{ products[0].title | truncate: 40 }}{% else %}New arrivals{% endif %}".to_string()),
            ("body", format!("Discover {offer}.")),
        ],
        Channel::Social => vec![("body", format!("Discover {offer}."))],
    };
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars {
        Vars {
            customer: TemplateCustomer {
                first_name: Some("Ada".into()),
                interests: vec!["running".into()],
                segment: None,
            },
            products: vec![TemplateProduct {
                product_id: "p1".into(),
                title: "Trail Runner 2".into(),
                price: "89.90".into(),
                currency: "EUR".into(),
                category: None,
            }],
            recommendations: vec![],
            brief: "spring".into(),
        }
    }

    #[test]
    fn builtin_templates_render_every_field_of_every_channel() {
        for channel in Channel::ALL {
            let t = builtin(channel);
            assert!(validate(channel, &t).is_empty(), "{channel:?}");
            let out = render(&t, &vars()).expect("renders");
            for spec in channel.fields() {
                let text = out.get(spec.name).expect("field rendered");
                assert!(!text.is_empty());
                assert!(text.chars().count() <= spec.max_chars, "{channel:?} {text}");
            }
        }
        let sms = render(&builtin(Channel::Sms), &vars()).expect("renders");
        assert_eq!(
            sms["body"],
            "Hi Ada! We have Trail Runner 2 for 89.90 EUR. Reply STOP to opt out."
        );
        let anonymous = Vars {
            customer: TemplateCustomer::default(),
            products: vec![],
            ..vars()
        };
        let sms = render(&builtin(Channel::Sms), &anonymous).expect("renders");
        assert_eq!(
            sms["body"],
            "Hi! We have new picks for you. Reply STOP to opt out."
        );
    }

    #[test]
    fn validation_names_missing_unknown_and_broken_fields() {
        let mut t = BTreeMap::new();
        t.insert("title".to_string(), "{{ customer.first_name ".to_string());
        t.insert("bogus".to_string(), "x".to_string());
        let bad = validate(Channel::Push, &t);
        let fields: Vec<&str> = bad.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(fields, ["fields.body", "fields.bogus", "fields.title"]);
        assert!(bad[2].1.contains("Liquid"));
    }
}
