-- Erasure audit: what was erased, when and by which key; never who the person was.
CREATE TABLE platform.audit_log (
    tenant_id   uuid NOT NULL REFERENCES platform.tenants(id) ON DELETE CASCADE,
    id          uuid NOT NULL,
    action      text NOT NULL,
    -- The Mercato id of the erased record: meaningless once the record is gone.
    subject_id  uuid,
    key_id      uuid,
    -- Counts of what was removed, per kind; no personal data.
    details     jsonb NOT NULL DEFAULT '{}',
    at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);

-- The erasure hook: every service whose schema holds data about customers defines
--   <schema>.erase_customer(tenant_id uuid, customer_id uuid) RETURNS bigint
-- returning how many rows it removed. Erasing a customer calls each such function in the
-- same transaction, so a customer is gone from every service or from none.
