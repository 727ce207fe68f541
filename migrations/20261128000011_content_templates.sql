-- Content: per-tenant Liquid templates, one set per channel. A template is the safe copy used
-- when generated copy fails its guardrails (and the tenant's own wording for that case).
CREATE TABLE content.templates (
    tenant_id   uuid NOT NULL REFERENCES platform.tenants(id) ON DELETE CASCADE,
    channel     text NOT NULL CHECK (channel IN ('email', 'sms', 'push', 'ad', 'social')),
    -- {field name: Liquid source}, e.g. {"subject": "...", "body": "..."}.
    fields      jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, channel)
);
