-- The tenant's fitted lifetime-value models (BG/NBD for purchases, Gamma-Gamma for spend).
CREATE TABLE profiling.clv_models (
    tenant_id        uuid PRIMARY KEY REFERENCES platform.tenants(id) ON DELETE CASCADE,
    r                double precision NOT NULL,
    alpha            double precision NOT NULL,
    a                double precision NOT NULL,
    b                double precision NOT NULL,
    p                double precision NOT NULL,
    q                double precision NOT NULL,
    v                double precision NOT NULL,
    customers        integer NOT NULL,
    repeat_customers integer NOT NULL,
    log_likelihood   double precision NOT NULL,
    -- True when the tenant had too little data and the fit leaned on the pooled prior.
    used_prior       boolean NOT NULL,
    fitted_at        timestamptz NOT NULL DEFAULT now()
);
