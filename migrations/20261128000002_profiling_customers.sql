-- Customers of each tenant, keyed by the tenant's own external id.
CREATE TABLE profiling.customers (
    tenant_id      uuid NOT NULL REFERENCES platform.tenants(id) ON DELETE CASCADE,
    id             uuid NOT NULL,
    external_id    text NOT NULL,
    email          text,
    phone          text,
    first_name     text,
    last_name      text,
    locale         text,
    country        char(2),
    birth_year     integer,
    -- Consent per channel: true, false, or NULL when never stated (which counts as no).
    consent_email  boolean,
    consent_sms    boolean,
    consent_push   boolean,
    -- Whether profile data may be used to personalise generated copy.
    consent_ai     boolean,
    traits         jsonb NOT NULL DEFAULT '{}',
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, external_id)
);
CREATE INDEX customers_email ON profiling.customers (tenant_id, email) WHERE email IS NOT NULL;
