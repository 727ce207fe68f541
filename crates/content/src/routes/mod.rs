//! HTTP resources of the content service.

pub mod bulk;
pub mod campaigns;
pub mod chat;
pub mod embeddings;
pub mod generate;
pub mod model;
pub mod templates;
