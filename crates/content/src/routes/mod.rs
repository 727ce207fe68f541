//! HTTP resources of the content service.

pub mod chat;
pub mod generate;
pub mod model;
pub mod templates;
