-- Campaigns and everything the decisioning loop logs about them: the audience frozen at
-- launch, each decision with the probability it was taken with, outcomes, and the running
-- counts per arm that the posteriors are read from.

CREATE TABLE metrics.campaigns (
    tenant_id             uuid NOT NULL REFERENCES platform.tenants(id) ON DELETE CASCADE,
    id                    uuid NOT NULL,
    name                  text NOT NULL,
    status                text NOT NULL DEFAULT 'draft'
                          CHECK (status IN ('draft', 'running', 'paused', 'completed')),
    -- 'conversion' maximises conversions worth value_per_conversion each; 'revenue' the
    -- revenue reported with conversion outcomes.
    goal                  text NOT NULL CHECK (goal IN ('conversion', 'revenue')),
    conversion_event      text NOT NULL,
    value_per_conversion  double precision NOT NULL CHECK (value_per_conversion >= 0),
    -- A profiling segment; NULL means every customer of the tenant.
    segment_id            uuid,
    -- What the bandit conditions on: 'none', 'cluster', 'rfm' or 'trait:<key>'.
    context_by            text NOT NULL,
    -- [{"channel": "email", "cost": 0.002}, ...]
    channels              jsonb NOT NULL,
    holdout_share         double precision NOT NULL CHECK (holdout_share >= 0 AND holdout_share < 1),
    budget                double precision CHECK (budget >= 0),
    spent                 double precision NOT NULL DEFAULT 0,
    -- At most frequency_cap messages per customer (all campaigns) in frequency_window_hours.
    frequency_cap         integer CHECK (frequency_cap >= 1),
    frequency_window_hours integer CHECK (frequency_window_hours >= 1),
    starts_at             timestamptz,
    ends_at               timestamptz,
    seed                  bigint NOT NULL,
    -- {"enabled", "interval_secs", "pause_below", "min_sends", "stop_on_decision", "alpha"}
    optimisation          jsonb NOT NULL,
    stop_reason           text,
    -- Bumped by every decision and outcome batch: live readers poll it.
    version               bigint NOT NULL DEFAULT 0,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    started_at            timestamptz,
    completed_at          timestamptz,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX campaigns_status ON metrics.campaigns (tenant_id, status);

CREATE TABLE metrics.variants (
    tenant_id     uuid NOT NULL,
    campaign_id   uuid NOT NULL,
    id            uuid NOT NULL,
    name          text NOT NULL,
    -- 'text' (fields given), 'template' (a content template id), 'generated' (written by
    -- the content service; provenance says by which model and prompt).
    source        text NOT NULL CHECK (source IN ('text', 'template', 'generated')),
    content       jsonb NOT NULL DEFAULT '{}',
    template_id   text,
    provenance    jsonb NOT NULL DEFAULT '{}',
    status        text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'paused')),
    paused_reason text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, campaign_id, id),
    UNIQUE (tenant_id, campaign_id, name),
    FOREIGN KEY (tenant_id, campaign_id) REFERENCES metrics.campaigns (tenant_id, id) ON DELETE CASCADE
);

-- The audience frozen when the campaign starts: who is in it, in which context, whether in
-- the holdout, and their spend before the campaign (the CUPED covariate).
CREATE TABLE metrics.audience (
    tenant_id    uuid NOT NULL,
    campaign_id  uuid NOT NULL,
    customer_id  uuid NOT NULL,
    context      text NOT NULL,
    holdout      boolean NOT NULL,
    pre_spend    double precision NOT NULL DEFAULT 0,
    consent_email boolean NOT NULL,
    consent_sms   boolean NOT NULL,
    consent_push  boolean NOT NULL,
    best_hour    smallint,
    PRIMARY KEY (tenant_id, campaign_id, customer_id),
    FOREIGN KEY (tenant_id, campaign_id) REFERENCES metrics.campaigns (tenant_id, id) ON DELETE CASCADE
);

-- One decision per customer and campaign; asking again returns the first one.
CREATE TABLE metrics.decisions (
    tenant_id    uuid NOT NULL,
    id           uuid NOT NULL,
    campaign_id  uuid NOT NULL,
    customer_id  uuid NOT NULL,
    holdout      boolean NOT NULL,
    context      text NOT NULL,
    channel      text,
    variant_id   uuid,
    send_at      timestamptz NOT NULL,
    -- Probability with which the policy took this action (holdout: the holdout share).
    probability  double precision NOT NULL CHECK (probability > 0 AND probability <= 1),
    -- The arms ('channel/variant') the customer was eligible for: off-policy evaluation
    -- replays other policies over exactly this set.
    candidates   text[] NOT NULL,
    cost         double precision NOT NULL DEFAULT 0,
    decided_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, campaign_id, customer_id),
    FOREIGN KEY (tenant_id, campaign_id) REFERENCES metrics.campaigns (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX decisions_customer ON metrics.decisions (tenant_id, customer_id, send_at);

-- At most one outcome of each type per decision: a repeat is either the same report
-- (idempotent) or a conflict.
CREATE TABLE metrics.outcomes (
    tenant_id    uuid NOT NULL,
    decision_id  uuid NOT NULL,
    type         text NOT NULL
                 CHECK (type IN ('delivered', 'opened', 'clicked', 'converted', 'unsubscribed')),
    campaign_id  uuid NOT NULL,
    revenue      double precision CHECK (revenue >= 0),
    occurred_at  timestamptz NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, decision_id, type),
    FOREIGN KEY (tenant_id, decision_id) REFERENCES metrics.decisions (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX outcomes_campaign ON metrics.outcomes (tenant_id, campaign_id);

-- Running counts per arm and context, updated with each decision and conversion; the
-- Thompson posteriors are read from here. Holdout decisions are not arms.
CREATE TABLE metrics.arm_stats (
    tenant_id    uuid NOT NULL,
    campaign_id  uuid NOT NULL,
    context      text NOT NULL,
    channel      text NOT NULL,
    variant_id   uuid NOT NULL,
    sends        bigint NOT NULL DEFAULT 0,
    conversions  bigint NOT NULL DEFAULT 0,
    revenue      double precision NOT NULL DEFAULT 0,
    revenue_sq   double precision NOT NULL DEFAULT 0,
    cost         double precision NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, campaign_id, context, channel, variant_id),
    FOREIGN KEY (tenant_id, campaign_id) REFERENCES metrics.campaigns (tenant_id, id) ON DELETE CASCADE
);

-- Erasure hook (see the platform audit log migration): a customer's audience entry,
-- decisions and their outcomes. Arm counts are aggregates and stay.
CREATE FUNCTION metrics.erase_customer(tenant uuid, customer uuid) RETURNS bigint
LANGUAGE sql AS $$
    WITH a AS (DELETE FROM metrics.audience WHERE tenant_id = tenant AND customer_id = customer RETURNING 1),
         o AS (DELETE FROM metrics.outcomes o USING metrics.decisions d
               WHERE o.tenant_id = tenant AND d.tenant_id = tenant AND d.customer_id = customer
                 AND o.decision_id = d.id RETURNING 1),
         d AS (DELETE FROM metrics.decisions WHERE tenant_id = tenant AND customer_id = customer RETURNING 1)
    SELECT (SELECT count(*) FROM a) + (SELECT count(*) FROM o) + (SELECT count(*) FROM d)
$$;
