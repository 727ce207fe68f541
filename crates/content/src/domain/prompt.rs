//! The prompt a copy request becomes. Only facts the caller may use reach the model: profile
//! fields when the customer consented to AI personalisation, products from the catalog.

use std::fmt::Write;

use crate::domain::channel::Channel;
use crate::inference::Message;

/// Changes whenever the wording below changes; stored with every generated text.
pub const PROMPT_VERSION: &str = "copy-2026-11-28";

/// A fact about the recipient: field name (as reported in provenance) and value.
#[derive(Debug, Clone, PartialEq)]
pub struct Fact {
    pub field: &'static str,
    pub value: String,
}

/// A product the copy may mention.
#[derive(Debug, Clone)]
pub struct Product {
    pub product_id: String,
    pub title: String,
    pub price: f64,
    pub currency: String,
    pub category: Option<String>,
    pub description: Option<String>,
}

impl Product {
    /// The price as the copy must write it ("49.90 EUR").
    pub fn price_text(&self) -> String {
        format!("{:.2} {}", self.price, self.currency)
    }
}

/// Brand voice.
#[derive(Debug, Clone, Default)]
pub struct Voice {
    pub tone: Option<String>,
    pub use_words: Vec<String>,
    pub avoid_words: Vec<String>,
}

/// Everything one prompt is built from.
pub struct Brief<'a> {
    pub channel: Channel,
    pub brief: &'a str,
    pub facts: &'a [Fact],
    pub products: &'a [Product],
    pub voice: &'a Voice,
    pub language: &'a str,
}

/// The chat messages for one attempt; `feedback` lists the rules the previous attempt broke.
pub fn messages(b: &Brief<'_>, feedback: Option<&str>) -> Vec<Message> {
    let mut system = String::from(
        "You are a marketing copywriter. Write one piece of copy for the brief. Use only the facts \
         given: never invent products, prices, discounts, names, links or contact details, and \
         never leave placeholders such as [Name].\n",
    );
    let _ = writeln!(system, "Channel: {}.", describe(b.channel));
    let _ = writeln!(system, "Language: {}.", b.language);
    if let Some(tone) = &b.voice.tone {
        let _ = writeln!(system, "Tone: {tone}.");
    }
    if !b.voice.use_words.is_empty() {
        let _ = writeln!(system, "Use these words: {}.", b.voice.use_words.join(", "));
    }
    if !b.voice.avoid_words.is_empty() {
        let _ = writeln!(
            system,
            "Never use these words: {}.",
            b.voice.avoid_words.join(", ")
        );
    }
    system.push_str(&b.channel.format_instructions());

    let mut user = format!("Brief: {}\n", b.brief.trim());
    if !b.facts.is_empty() {
        user.push_str("About the recipient:\n");
        for f in b.facts {
            let _ = writeln!(user, "- {}: {}", f.field.replace('_', " "), f.value);
        }
    }
    if !b.products.is_empty() {
        user.push_str("Products (write prices exactly as given):\n");
        for p in b.products {
            let _ = write!(user, "- {} ({})", p.title, p.price_text());
            if let Some(d) = &p.description {
                let short: String = d.chars().take(160).collect();
                let _ = write!(user, ": {short}");
            }
            user.push('\n');
        }
    }
    if let Some(feedback) = feedback {
        let _ = writeln!(
            user,
            "Your previous answer broke these rules, fix them: {feedback}"
        );
    }
    let _ = write!(user, "Write the {} now.", b.channel.as_str());
    vec![
        Message {
            role: "system".into(),
            content: system,
        },
        Message {
            role: "user".into(),
            content: user,
        },
    ]
}

fn describe(channel: Channel) -> &'static str {
    match channel {
        Channel::Email => "a marketing email with a subject line and a short body",
        Channel::Sms => "an SMS text message, at most 160 characters",
        Channel::Push => "a mobile push notification with a short title and body",
        Channel::Ad => "an online ad with a headline and a short body",
        Channel::Social => "a social media post",
    }
}

/// Tokens a channel's copy needs at most, the default `max_tokens`.
pub fn default_max_tokens(channel: Channel) -> usize {
    match channel {
        Channel::Email => 320,
        Channel::Sms => 80,
        Channel::Push => 80,
        Channel::Ad => 100,
        Channel::Social => 120,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_carries_only_the_given_facts_and_the_exact_prices() {
        let facts = vec![Fact {
            field: "first_name",
            value: "Ada".into(),
        }];
        let products = vec![Product {
            product_id: "p1".into(),
            title: "Trail Runner 2".into(),
            price: 89.9,
            currency: "EUR".into(),
            category: Some("shoes".into()),
            description: None,
        }];
        let voice = Voice {
            tone: Some("warm".into()),
            use_words: vec!["adventure".into()],
            avoid_words: vec!["cheap".into()],
        };
        let b = Brief {
            channel: Channel::Sms,
            brief: "Spring sale",
            facts: &facts,
            products: &products,
            voice: &voice,
            language: "en",
        };
        let m = messages(&b, Some("length: body has 200 characters, limit 160"));
        assert_eq!(m.len(), 2);
        assert!(m[0].content.contains("Never use these words: cheap."));
        assert!(m[0].content.contains("Tone: warm."));
        assert!(m[1].content.contains("- first name: Ada"));
        assert!(m[1].content.contains("Trail Runner 2 (89.90 EUR)"));
        assert!(m[1].content.contains("broke these rules"));
        let none = Brief { facts: &[], ..b };
        let m = messages(&none, None);
        assert!(!m[1].content.contains("About the recipient"));
        assert!(!m[1].content.contains("broke"));
    }
}
