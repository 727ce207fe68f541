//! The shape every batch endpoint answers with: one result per submitted item, in order.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::FieldError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ItemStatus {
    Created,
    Updated,
    /// Already recorded (a retried item); nothing changed.
    Duplicate,
    Rejected,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ItemResult {
    /// Position of the item in the request.
    pub index: usize,
    pub status: ItemStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({
    "accepted": 1, "rejected": 1,
    "items": [
        {"index": 0, "status": "created", "id": "0193a0c4-5b1e-7c3a-9f00-2b7c1d9e4a10"},
        {"index": 1, "status": "rejected", "errors": [{"field": "items[1].email", "message": "is not a valid email address"}]}
    ]
}))]
pub struct BatchResult {
    pub accepted: usize,
    pub rejected: usize,
    pub items: Vec<ItemResult>,
}

impl BatchResult {
    pub fn new(mut items: Vec<ItemResult>) -> Self {
        items.sort_by_key(|i| i.index);
        let rejected = items
            .iter()
            .filter(|i| i.status == ItemStatus::Rejected)
            .count();
        Self {
            accepted: items.len() - rejected,
            rejected,
            items,
        }
    }
}
