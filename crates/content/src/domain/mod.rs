//! The rules of copy: channels and their fields, prompts, guardrails, templates. Pure.

pub mod channel;
pub mod guardrails;
pub mod prompt;
pub mod recommend;
pub mod template;
