-- Platform schema: tenants, their API keys, and the durable job queue.
-- One schema per service; every table holding tenant data keys on tenant_id first.
CREATE SCHEMA IF NOT EXISTS platform;
CREATE SCHEMA IF NOT EXISTS profiling;
CREATE SCHEMA IF NOT EXISTS content;
CREATE SCHEMA IF NOT EXISTS metrics;

CREATE TABLE platform.tenants (
    id          uuid PRIMARY KEY,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE platform.api_keys (
    tenant_id    uuid NOT NULL REFERENCES platform.tenants(id) ON DELETE CASCADE,
    id           uuid NOT NULL,
    name         text NOT NULL,
    role         text NOT NULL CHECK (role IN ('admin', 'writer', 'reader')),
    -- First characters of the key, shown in listings so people can tell keys apart.
    prefix       text NOT NULL,
    -- sha256 of the whole key; the key itself is shown once and never stored.
    key_hash     bytea NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at   timestamptz,
    PRIMARY KEY (tenant_id, id)
);
-- Authentication looks a key up by its hash before the tenant is known.
CREATE UNIQUE INDEX api_keys_key_hash ON platform.api_keys (key_hash);

CREATE TABLE platform.jobs (
    tenant_id     uuid NOT NULL REFERENCES platform.tenants(id) ON DELETE CASCADE,
    id            uuid NOT NULL,
    kind          text NOT NULL,
    payload       jsonb NOT NULL DEFAULT '{}',
    status        text NOT NULL DEFAULT 'queued'
                  CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    progress      double precision NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 1),
    counters      jsonb NOT NULL DEFAULT '{}',
    result        jsonb,
    error         text,
    attempts      integer NOT NULL DEFAULT 0,
    max_attempts  integer NOT NULL DEFAULT 3 CHECK (max_attempts >= 1),
    run_at        timestamptz NOT NULL DEFAULT now(),
    locked_by     text,
    heartbeat_at  timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    started_at    timestamptz,
    finished_at   timestamptz,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);
-- Workers claim across tenants, so these two indexes cannot lead with tenant_id; they are
-- partial and stay as small as the live queue.
CREATE INDEX jobs_claimable ON platform.jobs (run_at) WHERE status = 'queued';
CREATE INDEX jobs_running ON platform.jobs (heartbeat_at) WHERE status = 'running';
CREATE INDEX jobs_tenant_created ON platform.jobs (tenant_id, created_at DESC);
