-- Products, events and the profiles kept up to date from them.

CREATE TABLE profiling.products (
    tenant_id    uuid NOT NULL REFERENCES platform.tenants(id) ON DELETE CASCADE,
    -- The tenant's own product id, as events refer to it.
    product_id   text NOT NULL,
    title        text NOT NULL,
    description  text,
    category     text,
    price        numeric(14, 2) NOT NULL CHECK (price >= 0),
    currency     char(3) NOT NULL,
    in_stock     boolean NOT NULL DEFAULT true,
    tags         text[] NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, product_id)
);

-- Immutable; a retried event with the same event_id is recorded once.
CREATE TABLE profiling.events (
    tenant_id     uuid NOT NULL REFERENCES platform.tenants(id) ON DELETE CASCADE,
    event_id      text NOT NULL,
    customer_id   uuid,
    anonymous_id  text,
    type          text NOT NULL,
    occurred_at   timestamptz NOT NULL,
    received_at   timestamptz NOT NULL DEFAULT now(),
    product_ids   text[] NOT NULL DEFAULT '{}',
    revenue       numeric(14, 2) CHECK (revenue >= 0),
    currency      char(3),
    channel       text,
    properties    jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (tenant_id, event_id),
    CHECK (customer_id IS NOT NULL OR anonymous_id IS NOT NULL)
);
CREATE INDEX events_customer ON profiling.events (tenant_id, customer_id, occurred_at)
    WHERE customer_id IS NOT NULL;
CREATE INDEX events_anonymous ON profiling.events (tenant_id, anonymous_id)
    WHERE anonymous_id IS NOT NULL;

-- Anonymous ids known to belong to a customer (from identify calls or events carrying both).
CREATE TABLE profiling.identities (
    tenant_id     uuid NOT NULL REFERENCES platform.tenants(id) ON DELETE CASCADE,
    anonymous_id  text NOT NULL,
    customer_id   uuid NOT NULL,
    linked_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, anonymous_id)
);

-- Running aggregates per customer, updated in the transaction that records new events.
-- Everything here is additive (counts, sums, min/max), so events arriving out of order or
-- in any batch split give the same profile.
CREATE TABLE profiling.profiles (
    tenant_id           uuid NOT NULL REFERENCES platform.tenants(id) ON DELETE CASCADE,
    customer_id         uuid NOT NULL,
    event_count         bigint NOT NULL DEFAULT 0,
    first_event_at      timestamptz,
    last_event_at       timestamptz,
    purchase_count      bigint NOT NULL DEFAULT 0,
    revenue_total       numeric(16, 2) NOT NULL DEFAULT 0,
    first_purchase_at   timestamptz,
    last_purchase_at    timestamptz,
    -- Engagement events (opens, clicks) per channel, and per hour of day (UTC).
    channel_engagement  jsonb NOT NULL DEFAULT '{}',
    hour_engagement     bigint[] NOT NULL DEFAULT array_fill(0::bigint, ARRAY[24]),
    category_counts     jsonb NOT NULL DEFAULT '{}',
    product_counts      jsonb NOT NULL DEFAULT '{}',
    updated_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, customer_id),
    FOREIGN KEY (tenant_id, customer_id) REFERENCES profiling.customers (tenant_id, id) ON DELETE CASCADE
);

-- Adds two {key: count} maps.
CREATE FUNCTION profiling.add_counts(a jsonb, b jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(jsonb_object_agg(key, total), '{}'::jsonb)
    FROM (
        SELECT key, sum(value::numeric) AS total
        FROM (SELECT * FROM jsonb_each_text(coalesce(a, '{}')) UNION ALL SELECT * FROM jsonb_each_text(coalesce(b, '{}'))) kv
        GROUP BY key
    ) sums
$$;

-- Adds two arrays element by element.
CREATE FUNCTION profiling.add_arrays(a bigint[], b bigint[]) RETURNS bigint[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT array_agg(coalesce(x, 0) + coalesce(y, 0) ORDER BY i)
    FROM unnest(a, b) WITH ORDINALITY AS t(x, y, i)
$$;

CREATE TABLE profiling.segments (
    tenant_id    uuid NOT NULL REFERENCES platform.tenants(id) ON DELETE CASCADE,
    id           uuid NOT NULL,
    name         text NOT NULL,
    description  text,
    rule         jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, name)
);

-- External ids of customers merged into another: events naming them reach the survivor.
CREATE TABLE profiling.customer_aliases (
    tenant_id    uuid NOT NULL REFERENCES platform.tenants(id) ON DELETE CASCADE,
    external_id  text NOT NULL,
    customer_id  uuid NOT NULL,
    merged_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, external_id)
);
