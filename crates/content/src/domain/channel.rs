//! Channels, the fields their copy consists of, and parsing model output into those fields.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Where copy is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Email,
    Sms,
    Push,
    Ad,
    Social,
}

/// One field of a channel's copy with its length limits in characters.
#[derive(Debug, Clone, Copy)]
pub struct FieldSpec {
    pub name: &'static str,
    pub min_chars: usize,
    pub max_chars: usize,
}

/// Copy split into fields, by field name.
pub type Fields = BTreeMap<String, String>;

const fn field(name: &'static str, min_chars: usize, max_chars: usize) -> FieldSpec {
    FieldSpec {
        name,
        min_chars,
        max_chars,
    }
}

const EMAIL: [FieldSpec; 2] = [field("subject", 2, 70), field("body", 10, 2000)];
const SMS: [FieldSpec; 1] = [field("body", 10, 160)];
const PUSH: [FieldSpec; 2] = [field("title", 2, 50), field("body", 10, 150)];
const AD: [FieldSpec; 2] = [field("headline", 2, 40), field("body", 10, 125)];
const SOCIAL: [FieldSpec; 1] = [field("body", 10, 280)];

impl Channel {
    pub const ALL: [Channel; 5] = [
        Channel::Email,
        Channel::Sms,
        Channel::Push,
        Channel::Ad,
        Channel::Social,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Sms => "sms",
            Channel::Push => "push",
            Channel::Ad => "ad",
            Channel::Social => "social",
        }
    }

    pub fn fields(self) -> &'static [FieldSpec] {
        match self {
            Channel::Email => &EMAIL,
            Channel::Sms => &SMS,
            Channel::Push => &PUSH,
            Channel::Ad => &AD,
            Channel::Social => &SOCIAL,
        }
    }

    /// How the model is told to lay out its answer.
    pub fn format_instructions(self) -> String {
        let fields = self.fields();
        let mut out = format!(
            "Answer with exactly {} labelled line{}, nothing else:\n",
            fields.len(),
            if fields.len() == 1 { "" } else { "s" }
        );
        for f in fields {
            out.push_str(&format!(
                "{}: <{}, at most {} characters>\n",
                capitalise(f.name),
                f.name,
                f.max_chars
            ));
        }
        out
    }

    /// Splits model output into the channel's fields. Labels ("Subject:", "**Body:**", "- Title:")
    /// are matched case-insensitively, with a few synonyms; a field runs until the next label.
    /// Text before the first label is dropped for multi-field channels ("Sure! Here it is:")
    /// and kept for single-field ones when no label appears at all.
    pub fn parse_fields(self, text: &str) -> Fields {
        let specs = self.fields();
        let mut out = Fields::new();
        let mut current: Option<&'static str> = None;
        let mut preamble: Vec<&str> = Vec::new();
        let mut buf: Vec<String> = Vec::new();
        let flush = |out: &mut Fields, name: Option<&'static str>, buf: &mut Vec<String>| {
            if let Some(n) = name {
                let value = clean_value(&buf.join("\n"));
                if !value.is_empty() && !out.contains_key(n) {
                    out.insert(n.to_string(), value);
                }
            }
            buf.clear();
        };
        for line in text.lines() {
            match label(self, line) {
                Some((name, rest)) => {
                    flush(&mut out, current, &mut buf);
                    current = Some(name);
                    if !rest.trim().is_empty() {
                        buf.push(rest.trim().to_string());
                    }
                }
                None => match current {
                    Some(_) => buf.push(line.to_string()),
                    None => preamble.push(line),
                },
            }
        }
        flush(&mut out, current, &mut buf);
        if out.is_empty() && specs.len() == 1 {
            let value = clean_value(&preamble.join("\n"));
            if !value.is_empty() {
                out.insert(specs[0].name.to_string(), value);
            }
        }
        out
    }
}

impl std::str::FromStr for Channel {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Channel::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| format!("unknown channel {s:?}: one of email, sms, push, ad, social"))
    }
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

/// If `line` starts with a label of one of the channel's fields, the field and the rest.
fn label(channel: Channel, line: &str) -> Option<(&'static str, &str)> {
    let stripped = line
        .trim_start()
        .trim_start_matches(['#', '-', '*', '>', ' '])
        .trim_start();
    let (head, rest) = stripped.split_once(':')?;
    let head = head.trim().trim_matches('*').trim().to_ascii_lowercase();
    let rest = rest.trim_start_matches('*');
    let name = match head.as_str() {
        "subject" | "subject line" | "email subject" => "subject",
        "body" | "text" | "message" | "copy" | "email body" | "sms" | "post" => "body",
        "title" => "title",
        "headline" => "headline",
        _ => return None,
    };
    let name = match (channel, name) {
        (Channel::Ad, "title") => "headline",
        (Channel::Push, "headline" | "subject") => "title",
        (Channel::Email, "title" | "headline") => "subject",
        _ => name,
    };
    channel
        .fields()
        .iter()
        .find(|f| f.name == name)
        .map(|f| (f.name, rest))
}

/// Trims whitespace and surrounding quotes.
fn clean_value(v: &str) -> String {
    let t = v.trim();
    let quotes = [
        ('"', '"'),
        ('\u{201c}', '\u{201d}'),
        ('\'', '\''),
        ('\u{2018}', '\u{2019}'),
    ];
    for (open, close) in quotes {
        if t.len() >= 2 && t.starts_with(open) && t.ends_with(close) {
            let inner = &t[open.len_utf8()..t.len() - close.len_utf8()];
            return inner.trim().to_string();
        }
    }
    t.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_labels_bold_preamble_and_multiline_bodies() {
        let text = "Sure! Here is your email:\n**Subject:** \u{201c}Spring is here\u{201d}\nBody: Hi Ada,\nour trail shoes are back.\n\nSee you soon.";
        let f = Channel::Email.parse_fields(text);
        assert_eq!(f["subject"], "Spring is here");
        assert_eq!(
            f["body"],
            "Hi Ada,\nour trail shoes are back.\n\nSee you soon."
        );
        assert_eq!(f.len(), 2);
    }

    #[test]
    fn single_field_channels_accept_unlabelled_text_and_synonyms() {
        let f = Channel::Sms.parse_fields("  \"Trail shoes are back, Ada!\"  ");
        assert_eq!(f["body"], "Trail shoes are back, Ada!");
        let f = Channel::Sms.parse_fields("Message: Trail shoes are back");
        assert_eq!(f["body"], "Trail shoes are back");
        let f = Channel::Ad.parse_fields("Title: Run further\nText: New trail range.");
        assert_eq!(f["headline"], "Run further");
        assert_eq!(f["body"], "New trail range.");
        // A multi-field channel without labels yields nothing (the guardrails then fail it).
        assert!(Channel::Push.parse_fields("just words").is_empty());
    }

    #[test]
    fn channels_parse_and_describe_their_format() {
        assert_eq!("push".parse::<Channel>(), Ok(Channel::Push));
        assert!("fax".parse::<Channel>().is_err());
        let f = Channel::Email.format_instructions();
        assert!(f.contains("Subject: <subject, at most 70 characters>"));
        assert!(f.contains("Body: <body, at most 2000 characters>"));
    }
}
