-- Content: messages written in bulk for a segment, one per customer and job, with how they
-- were written (model or template, guardrails, provenance).
CREATE TABLE content.messages (
    tenant_id    uuid NOT NULL REFERENCES platform.tenants(id) ON DELETE CASCADE,
    id           uuid NOT NULL,
    job_id       uuid NOT NULL,
    customer_id  uuid NOT NULL,
    channel      text NOT NULL,
    fields       jsonb NOT NULL,
    source       text NOT NULL CHECK (source IN ('model', 'template')),
    passed       boolean NOT NULL,
    checks       jsonb NOT NULL,
    provenance   jsonb NOT NULL,
    usage        jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    -- A resumed job skips customers it already wrote for.
    UNIQUE (tenant_id, job_id, customer_id)
);

-- The privacy hook profiling's erasure calls: a customer's messages go with them.
CREATE FUNCTION content.erase_customer(tenant uuid, customer uuid) RETURNS bigint
LANGUAGE sql AS $$
    WITH gone AS (DELETE FROM content.messages WHERE tenant_id = tenant AND customer_id = customer RETURNING 1)
    SELECT count(*) FROM gone
$$;
