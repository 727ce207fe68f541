//! Rules and calculations of the metrics service: no HTTP, no SQL.

pub mod attribution;
pub mod budget;
pub mod campaign;
pub mod report;

/// Rejected input of a domain calculation, naming the request field at fault so that the
/// HTTP layer can return it as a field error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InputError {
    /// Path of the offending field, e.g. `half_life_hours` or `cells[3].alpha`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl InputError {
    pub(crate) fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }

    /// Path of the offending field.
    pub fn field(&self) -> &str {
        &self.field
    }

    /// What is wrong with the field.
    pub fn message(&self) -> &str {
        &self.message
    }
}
