//! Guardrails every piece of copy passes before it may be sent: required fields, channel
//! length limits, banned words, placeholder residue, prices and products that match the
//! catalog, and no one else's personal data. Every rule is always reported, passed or not.

use std::sync::LazyLock;

use regex::Regex;
use serde::Serialize;

use crate::domain::channel::{Channel, Fields};

/// The outcome of one rule.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Check {
    pub name: &'static str,
    pub passed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Check {
    fn new(name: &'static str, problems: Vec<String>) -> Self {
        Check {
            name,
            passed: problems.is_empty(),
            detail: (!problems.is_empty()).then(|| problems.join("; ")),
        }
    }
}

/// A catalog product as the guardrails see it.
#[derive(Debug, Clone, Default)]
pub struct CatalogItem {
    pub product_id: String,
    pub title: String,
    pub price: Option<f64>,
    pub currency: Option<String>,
}

/// What the copy is checked against.
#[derive(Debug, Clone, Default)]
pub struct Context {
    pub banned_words: Vec<String>,
    /// The products the copy may mention (their prices are the only prices allowed).
    pub products: Vec<CatalogItem>,
    /// The tenant's other products, which the copy must not name.
    pub catalog: Vec<CatalogItem>,
    pub own_emails: Vec<String>,
    pub own_phones: Vec<String>,
    /// The recipient's own name parts.
    pub own_names: Vec<String>,
    /// Names of other people that must never appear.
    pub other_names: Vec<String>,
    /// Links the copy may contain (a model must not invent any).
    pub allowed_links: Vec<String>,
}

static PLACEHOLDER: LazyLock<Vec<Regex>> = LazyLock::new(|| {
    [
        r"\{\{|\}\}|\{%|%\}",
        r"\{\s*[A-Za-z_][A-Za-z0-9_ ]{0,30}\s*\}",
        r"\[(?:[A-Z][a-z]*(?:\s+[A-Z][a-z]*){0,2}|[^\]]*\b(?i:name|link|url|product|company|date|price|address|email|phone)\b[^\]]*)\](?:[^(]|$)",
        r"<\s*(?i:name|first[ _]name|product|link|url|company|date|price)\s*>",
        r"(?i:lorem ipsum|your name here)|\bXXX+\b|\bTBD\b|\bINSERT\b",
    ]
    .iter()
    .map(|p| Regex::new(p).expect("valid placeholder regex"))
    .collect()
});

static MONEY: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?ix)
        (?P<pre>[$€£¥]|\b(?:USD|EUR|GBP|CHF|JPY|CAD|AUD|SEK|NOK|DKK|PLN)\b)\s?(?P<a>\d{1,3}(?:[.,\s]\d{3})*(?:[.,]\d{1,2})?|\d+(?:[.,]\d{1,2})?)
        |
        (?P<b>\d{1,3}(?:[.,\s]\d{3})*(?:[.,]\d{1,2})?|\d+(?:[.,]\d{1,2})?)\s?(?P<post>[$€£¥]|\b(?:USD|EUR|GBP|CHF|JPY|CAD|AUD|SEK|NOK|DKK|PLN)\b|\b(?:dollars?|euros?|pounds?)\b)",
    )
    .expect("valid money regex")
});

static URL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b(?:https?://|www\.)[^\s)\]]+|\b[a-z0-9-]+\.(?:com|net|org|io|co|shop|store)(?:/[^\s)]*)?\b")
        .expect("valid url regex")
});

static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}").expect("valid email regex")
});

static PHONE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\+?\(?\d[\d\s().\-]{5,}\d").expect("valid phone regex"));

/// Runs every rule over the channel's fields.
pub fn check(channel: Channel, fields: &Fields, ctx: &Context) -> Vec<Check> {
    let all: String = fields.values().cloned().collect::<Vec<_>>().join("\n");
    vec![
        required(channel, fields),
        length(channel, fields),
        banned(&all, &ctx.banned_words),
        placeholders(&all),
        prices(&all, &ctx.products),
        other_products(&all, ctx),
        links(&all, ctx),
        personal_data(&all, ctx),
    ]
}

pub fn passed(checks: &[Check]) -> bool {
    checks.iter().all(|c| c.passed)
}

/// The failed rules in words, fed back to the model on a retry.
pub fn failure_summary(checks: &[Check]) -> String {
    checks
        .iter()
        .filter(|c| !c.passed)
        .map(|c| match &c.detail {
            Some(d) => format!("{} ({d})", c.name),
            None => c.name.to_string(),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn required(channel: Channel, fields: &Fields) -> Check {
    let problems = channel
        .fields()
        .iter()
        .filter_map(|f| match fields.get(f.name) {
            None => Some(format!("{} is missing", f.name)),
            Some(v) if v.trim().chars().count() < f.min_chars => Some(format!(
                "{} is shorter than {} characters",
                f.name, f.min_chars
            )),
            Some(_) => None,
        })
        .collect();
    Check::new("required_fields", problems)
}

fn length(channel: Channel, fields: &Fields) -> Check {
    let problems = channel
        .fields()
        .iter()
        .filter_map(|f| {
            let n = fields.get(f.name)?.chars().count();
            (n > f.max_chars)
                .then(|| format!("{} has {n} characters, limit {}", f.name, f.max_chars))
        })
        .collect();
    Check::new("length", problems)
}

/// Whole-word (or whole-phrase), case-insensitive occurrence.
fn contains_word(text: &str, word: &str) -> bool {
    let word = word.trim();
    if word.is_empty() {
        return false;
    }
    let pattern = format!(r"(?i)(?:^|\W){}(?:\W|$)", regex::escape(word));
    Regex::new(&pattern).is_ok_and(|r| r.is_match(text))
}

fn banned(text: &str, words: &[String]) -> Check {
    let found: Vec<String> = words
        .iter()
        .filter(|w| contains_word(text, w))
        .map(|w| format!("uses {w:?}"))
        .collect();
    Check::new("banned_words", found)
}

fn placeholders(text: &str) -> Check {
    let found: Vec<String> = PLACEHOLDER
        .iter()
        .filter_map(|r| r.find(text))
        .map(|m| format!("placeholder {:?}", m.as_str().trim()))
        .collect();
    Check::new("placeholders", found)
}

fn currency_code(symbol: &str) -> Option<&'static str> {
    match symbol.to_ascii_lowercase().as_str() {
        "$" | "usd" | "dollar" | "dollars" => Some("USD"),
        "€" | "eur" | "euro" | "euros" => Some("EUR"),
        "£" | "gbp" | "pound" | "pounds" => Some("GBP"),
        "¥" | "jpy" => Some("JPY"),
        "chf" => Some("CHF"),
        "cad" => Some("CAD"),
        "aud" => Some("AUD"),
        "sek" => Some("SEK"),
        "nok" => Some("NOK"),
        "dkk" => Some("DKK"),
        "pln" => Some("PLN"),
        _ => None,
    }
}

/// Parses "1,299.90", "1.299,90", "12,99" or "12.5" as an amount.
fn parse_amount(raw: &str) -> Option<f64> {
    let s: String = raw.chars().filter(|c| !c.is_whitespace()).collect();
    let last_sep = s.rfind(['.', ',']);
    let normalised = match last_sep {
        Some(i) if s.len() - i - 1 <= 2 => {
            let (int, frac) = s.split_at(i);
            format!("{}.{}", int.replace(['.', ','], ""), &frac[1..])
        }
        _ => s.replace(['.', ','], ""),
    };
    normalised.parse().ok()
}

fn prices(text: &str, products: &[CatalogItem]) -> Check {
    let mut problems = Vec::new();
    for caps in MONEY.captures_iter(text) {
        let amount = caps
            .name("a")
            .or_else(|| caps.name("b"))
            .map(|m| m.as_str());
        let symbol = caps
            .name("pre")
            .or_else(|| caps.name("post"))
            .map(|m| m.as_str());
        let (Some(amount), Some(symbol)) = (amount, symbol) else {
            continue;
        };
        let Some(value) = parse_amount(amount) else {
            continue;
        };
        let currency = currency_code(symbol);
        let matches = products.iter().any(|p| {
            p.price.is_some_and(|price| (price - value).abs() < 0.005)
                && match (currency, &p.currency) {
                    (Some(c), Some(pc)) => c.eq_ignore_ascii_case(pc),
                    _ => true,
                }
        });
        if !matches {
            problems.push(format!(
                "{} is not the price of a product given",
                caps[0].trim()
            ));
        }
    }
    Check::new("catalog_prices", problems)
}

fn other_products(text: &str, ctx: &Context) -> Check {
    let allowed: Vec<&str> = ctx.products.iter().map(|p| p.title.as_str()).collect();
    // The allowed titles are blanked first, so naming "Trail Running Shoes" (given) does not
    // count as naming "Running Shoes" (not given).
    let mut text = text.to_string();
    for title in &allowed {
        if let Ok(r) = Regex::new(&format!("(?i){}", regex::escape(title))) {
            text = r.replace_all(&text, " ").into_owned();
        }
    }
    let text = text.as_str();
    let problems = ctx
        .catalog
        .iter()
        .filter(|p| !ctx.products.iter().any(|a| a.product_id == p.product_id))
        .filter(|p| !allowed.iter().any(|a| a.eq_ignore_ascii_case(&p.title)))
        .filter(|p| p.title.split_whitespace().count() >= 2 || p.title.chars().count() >= 6)
        .filter(|p| contains_word(text, &p.title))
        .map(|p| format!("names {:?}, which was not given", p.title))
        .collect();
    Check::new("catalog_products", problems)
}

fn links(text: &str, ctx: &Context) -> Check {
    // Email addresses are personal data, judged by their own rule.
    let without_emails = EMAIL.replace_all(text, " ");
    let problems = URL
        .find_iter(&without_emails)
        .map(|m| m.as_str().trim_end_matches(['.', ',', '!', '?']))
        .filter(|u| !ctx.allowed_links.iter().any(|a| a.eq_ignore_ascii_case(u)))
        .map(|u| format!("link {u:?} was not given"))
        .collect();
    Check::new("links", problems)
}

fn mask_email(e: &str) -> String {
    match e.split_once('@') {
        Some((user, domain)) => {
            format!("{}***@{domain}", user.chars().next().unwrap_or('*'))
        }
        None => "***".into(),
    }
}

fn digits(s: &str) -> String {
    s.chars().filter(char::is_ascii_digit).collect()
}

fn personal_data(text: &str, ctx: &Context) -> Check {
    let mut problems = Vec::new();
    for m in EMAIL.find_iter(text) {
        if !ctx
            .own_emails
            .iter()
            .any(|e| e.eq_ignore_ascii_case(m.as_str()))
        {
            problems.push(format!(
                "an email address not the recipient's ({})",
                mask_email(m.as_str())
            ));
        }
    }
    // Numbers compare on their last 9 digits, so "+44 20 7946 0958" and "020 7946 0958" agree.
    let tail = |d: &str| {
        d.chars()
            .skip(d.len().saturating_sub(9))
            .collect::<String>()
    };
    let own_phones: Vec<String> = ctx.own_phones.iter().map(|p| tail(&digits(p))).collect();
    for m in PHONE.find_iter(text) {
        let d = digits(m.as_str());
        // Prices and dates are not phone numbers: at least 9 digits, or 7 after a "+".
        let phone_like = d.len() >= 9 || (m.as_str().starts_with('+') && d.len() >= 7);
        if phone_like && !own_phones.contains(&tail(&d)) {
            let shown: String = d
                .chars()
                .rev()
                .take(2)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            problems.push(format!("a phone number not the recipient's (…{shown})"));
        }
    }
    for name in &ctx.other_names {
        let own = ctx.own_names.iter().any(|n| n.eq_ignore_ascii_case(name));
        if !own && contains_word(text, name) {
            problems.push("the name of another person".to_string());
        }
    }
    Check::new("personal_data", problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> Fields {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn item(id: &str, title: &str, price: f64, currency: &str) -> CatalogItem {
        CatalogItem {
            product_id: id.into(),
            title: title.into(),
            price: Some(price),
            currency: Some(currency.into()),
        }
    }

    fn by_name<'a>(checks: &'a [Check], name: &str) -> &'a Check {
        checks
            .iter()
            .find(|c| c.name == name)
            .expect("rule reported")
    }

    #[test]
    fn every_rule_is_reported_and_clean_copy_passes() {
        let ctx = Context {
            products: vec![item("p1", "Trail Runner 2", 89.9, "EUR")],
            ..Context::default()
        };
        let c = check(
            Channel::Email,
            &fields(&[
                ("subject", "Spring trails"),
                ("body", "The Trail Runner 2 is back for 89.90 EUR."),
            ]),
            &ctx,
        );
        assert_eq!(c.len(), 8);
        assert!(passed(&c), "{c:?}");
    }

    #[test]
    fn missing_short_and_long_fields_fail_counting_characters_not_bytes() {
        let c = check(
            Channel::Push,
            &fields(&[("title", "x")]),
            &Context::default(),
        );
        let r = by_name(&c, "required_fields");
        assert!(!r.passed);
        assert!(
            r.detail
                .as_deref()
                .is_some_and(|d| d.contains("body is missing") && d.contains("title is shorter"))
        );
        // 160 characters with emoji (4 bytes each) is within the SMS limit; 161 is not.
        let sms = "🎉".repeat(10) + &"a".repeat(150);
        assert!(
            by_name(
                &check(
                    Channel::Sms,
                    &fields(&[("body", &sms)]),
                    &Context::default()
                ),
                "length"
            )
            .passed
        );
        let sms = sms + "a";
        let l = check(
            Channel::Sms,
            &fields(&[("body", &sms)]),
            &Context::default(),
        );
        assert_eq!(
            by_name(&l, "length").detail.as_deref(),
            Some("body has 161 characters, limit 160")
        );
    }

    #[test]
    fn banned_words_match_whole_words_only() {
        let ctx = Context {
            banned_words: vec!["free".into(), "act now".into()],
            ..Context::default()
        };
        let ok = check(
            Channel::Sms,
            &fields(&[("body", "Enjoy the freedom of the trail")]),
            &ctx,
        );
        assert!(by_name(&ok, "banned_words").passed);
        let bad = check(
            Channel::Sms,
            &fields(&[("body", "FREE shipping, Act Now!")]),
            &ctx,
        );
        let b = by_name(&bad, "banned_words");
        assert!(!b.passed);
        assert!(
            b.detail
                .as_deref()
                .is_some_and(|d| d.contains("free") && d.contains("act now"))
        );
    }

    #[test]
    fn placeholders_are_caught_but_ordinary_brackets_are_not() {
        for bad in [
            "Hi [Name], look",
            "Hi {{ first_name }}",
            "Hi {first_name}!",
            "Visit <link> now",
            "Lorem ipsum dolor",
            "Price: TBD soon",
            "Call [Company Phone] today",
        ] {
            let c = check(Channel::Sms, &fields(&[("body", bad)]), &Context::default());
            assert!(!by_name(&c, "placeholders").passed, "{bad}");
        }
        for ok in [
            "Save now [50% off] on trails",
            "See [our guide](https://example.com) today",
            "Trails await you, Ada",
        ] {
            let c = check(Channel::Sms, &fields(&[("body", ok)]), &Context::default());
            assert!(by_name(&c, "placeholders").passed, "{ok}");
        }
    }

    #[test]
    fn prices_must_be_catalog_prices_in_the_catalog_currency() {
        let ctx = Context {
            products: vec![item("p1", "Trail Runner 2", 12.99, "USD")],
            ..Context::default()
        };
        let p = |t: &str| {
            by_name(
                &check(Channel::Sms, &fields(&[("body", t)]), &ctx),
                "catalog_prices",
            )
            .clone()
        };
        assert!(p("Only $12.99 this week").passed);
        assert!(p("Only 12.99 USD this week").passed);
        assert!(p("Save 20% this week on trails").passed);
        assert!(!p("Only $12.90 this week").passed);
        assert!(!p("Only 12.99 € this week").passed, "currency mismatch");
        let eu = Context {
            products: vec![item("p1", "Trail Runner 2", 1299.9, "EUR")],
            ..Context::default()
        };
        let c = check(
            Channel::Sms,
            &fields(&[("body", "Now 1.299,90 € for the Trail Runner 2")]),
            &eu,
        );
        assert!(by_name(&c, "catalog_prices").passed);
    }

    #[test]
    fn other_catalog_products_may_not_be_named() {
        let ctx = Context {
            products: vec![item("p1", "Trail Runner 2", 89.9, "EUR")],
            catalog: vec![
                item("p1", "Trail Runner 2", 89.9, "EUR"),
                item("p2", "Summit Jacket", 150.0, "EUR"),
                item("p3", "Cap", 9.0, "EUR"),
            ],
            ..Context::default()
        };
        let c = check(
            Channel::Sms,
            &fields(&[(
                "body",
                "Pair the Trail Runner 2 with a summit jacket and a cap",
            )]),
            &ctx,
        );
        let r = by_name(&c, "catalog_products");
        assert!(!r.passed);
        assert!(
            r.detail
                .as_deref()
                .is_some_and(|d| d.contains("Summit Jacket") && !d.contains("Cap"))
        );
        // A given title containing another product's title is not a mention of that product.
        let nested = Context {
            products: vec![item("p4", "Trail Running Shoes", 99.0, "EUR")],
            catalog: vec![
                item("p4", "Trail Running Shoes", 99.0, "EUR"),
                item("p5", "Running Shoes", 79.0, "EUR"),
            ],
            ..Context::default()
        };
        let c = check(
            Channel::Sms,
            &fields(&[("body", "Meet the Trail Running Shoes")]),
            &nested,
        );
        assert!(by_name(&c, "catalog_products").passed, "{c:?}");
    }

    #[test]
    fn invented_links_fail_given_ones_pass() {
        let ctx = Context {
            allowed_links: vec!["https://shop.example/boots".into()],
            ..Context::default()
        };
        for bad in [
            "Visit https://www.adabotrainfit.com/ now",
            "See www.deals.co.uk today",
            "Shop at trailgear.com!",
        ] {
            let c = check(Channel::Sms, &fields(&[("body", bad)]), &ctx);
            assert!(!by_name(&c, "links").passed, "{bad}");
        }
        let c = check(
            Channel::Sms,
            &fields(&[("body", "New boots: https://shop.example/boots.")]),
            &ctx,
        );
        assert!(by_name(&c, "links").passed, "{c:?}");
        let c = check(
            Channel::Sms,
            &fields(&[("body", "Write to ada@example.com, thanks")]),
            &ctx,
        );
        assert!(by_name(&c, "links").passed);
    }

    #[test]
    fn someone_elses_contact_data_fails_and_is_masked() {
        let ctx = Context {
            own_emails: vec!["ada@example.com".into()],
            own_phones: vec!["+44 20 7946 0958".into()],
            own_names: vec!["Ada".into()],
            other_names: vec!["Grace".into(), "Ada".into()],
            ..Context::default()
        };
        let mine = check(
            Channel::Sms,
            &fields(&[(
                "body",
                "Ada, reply to ada@example.com or call 020 7946 0958",
            )]),
            &ctx,
        );
        assert!(by_name(&mine, "personal_data").passed, "{mine:?}");
        let theirs = check(
            Channel::Sms,
            &fields(&[(
                "body",
                "Ask Grace at grace.hopper@navy.mil or +1 555 010 9999",
            )]),
            &ctx,
        );
        let r = by_name(&theirs, "personal_data");
        assert!(!r.passed);
        let d = r.detail.clone().unwrap_or_default();
        assert!(d.contains("g***@navy.mil") && !d.contains("grace.hopper"));
        assert!(d.contains("…99") && !d.contains("5550109999"));
        assert!(d.contains("another person"));
        assert!(failure_summary(&theirs).starts_with("personal_data ("));
    }
}
