-- Content: product embeddings for recommendations, kept in step with the catalog. text_hash is
-- the md5 of the text that was embedded (title, category, description, tags), so a product
-- whose text changed is embedded again.
CREATE TABLE content.product_embeddings (
    tenant_id   uuid NOT NULL,
    product_id  text NOT NULL,
    text_hash   text NOT NULL,
    embedding   real[] NOT NULL,
    model       text NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, product_id),
    FOREIGN KEY (tenant_id, product_id) REFERENCES profiling.products (tenant_id, product_id) ON DELETE CASCADE
);
