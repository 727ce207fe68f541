-- Behavioural clusters: the latest k-means run per tenant and each customer's cluster.
CREATE TABLE profiling.cluster_runs (
    tenant_id   uuid NOT NULL REFERENCES platform.tenants(id) ON DELETE CASCADE,
    id          uuid NOT NULL,
    k           integer NOT NULL,
    silhouette  double precision NOT NULL,
    customers   integer NOT NULL,
    -- Per k tried: its silhouette; per cluster: size, centroid and distinguishing traits.
    candidates  jsonb NOT NULL,
    clusters    jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE profiling.cluster_assignments (
    tenant_id    uuid NOT NULL REFERENCES platform.tenants(id) ON DELETE CASCADE,
    customer_id  uuid NOT NULL,
    cluster      integer NOT NULL,
    run_id       uuid NOT NULL,
    PRIMARY KEY (tenant_id, customer_id),
    FOREIGN KEY (tenant_id, customer_id) REFERENCES profiling.customers (tenant_id, id) ON DELETE CASCADE
);
