//! Pieces of the OpenAPI document every service shares.

use utoipa::openapi::{
    OpenApi,
    security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
};

/// Declares the `api_key` bearer scheme that every `/v1` operation lists under `security`.
pub fn add_security(doc: &mut OpenApi) {
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "api_key",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("mk_…")
                .description(Some("A Mercato API key: `Authorization: Bearer mk_…`"))
                .build(),
        ),
    );
}
