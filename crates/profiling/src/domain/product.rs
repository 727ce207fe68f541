//! Catalog products as clients send them.

use mercato_platform::error::FieldError;
use serde::Deserialize;
use utoipa::ToSchema;

pub const MAX_BATCH: usize = 1000;

#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "product_id": "sku-123", "title": "Trail running shoe", "description": "Light, grippy, waterproof.",
    "category": "shoes", "price": 119.0, "currency": "EUR", "in_stock": true, "tags": ["running", "outdoor"]
}))]
pub struct ProductInput {
    /// The tenant's own product id, as events refer to it.
    pub product_id: String,
    pub title: String,
    pub description: Option<String>,
    pub category: Option<String>,
    pub price: f64,
    /// ISO 4217.
    pub currency: String,
    #[serde(default = "in_stock_default")]
    pub in_stock: bool,
    #[serde(default)]
    pub tags: Vec<String>,
}

fn in_stock_default() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq)]
pub struct CleanProduct {
    pub product_id: String,
    pub title: String,
    pub description: Option<String>,
    pub category: Option<String>,
    pub price: f64,
    pub currency: String,
    pub in_stock: bool,
    pub tags: Vec<String>,
}

impl ProductInput {
    pub fn clean(self, prefix: &str) -> Result<CleanProduct, Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut fail = |f: &str, m: &str| errors.push(FieldError::new(format!("{prefix}{f}"), m));
        let product_id = self.product_id.trim().to_owned();
        if product_id.is_empty() || product_id.chars().count() > 200 {
            fail("product_id", "must be 1 to 200 characters");
        }
        let title = self.title.trim().to_owned();
        if title.is_empty() || title.chars().count() > 300 {
            fail("title", "must be 1 to 300 characters");
        }
        if self
            .description
            .as_deref()
            .is_some_and(|d| d.chars().count() > 5000)
        {
            fail("description", "must be at most 5000 characters");
        }
        let category = self
            .category
            .map(|c| c.trim().to_lowercase())
            .filter(|c| !c.is_empty());
        if category.as_deref().is_some_and(|c| c.chars().count() > 100) {
            fail("category", "must be at most 100 characters");
        }
        if !self.price.is_finite() || !(0.0..=1e10).contains(&self.price) {
            fail("price", "must be a non-negative amount");
        }
        let currency = self.currency.trim().to_ascii_uppercase();
        if currency.len() != 3 || !currency.chars().all(|c| c.is_ascii_uppercase()) {
            fail("currency", "is not an ISO 4217 code such as EUR");
        }
        let tags: Vec<String> = self
            .tags
            .iter()
            .map(|t| t.trim().to_lowercase())
            .filter(|t| !t.is_empty())
            .collect();
        if tags.len() > 50 || tags.iter().any(|t| t.chars().count() > 50) {
            fail("tags", "at most 50 tags of up to 50 characters");
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(CleanProduct {
            product_id,
            title,
            description: self.description.map(|d| d.trim().to_owned()),
            category,
            price: (self.price * 100.0).round() / 100.0,
            currency,
            in_stock: self.in_stock,
            tags,
        })
    }
}
