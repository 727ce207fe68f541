-- Sequence models trained on a tenant's own events: one row per trained version, with its
-- weights (safetensors), vocabulary, hyper-parameters, data window and evaluation. At most
-- one version per task is active; scoring uses it.
CREATE TABLE profiling.models (
    tenant_id       uuid NOT NULL REFERENCES platform.tenants(id) ON DELETE CASCADE,
    id              uuid NOT NULL,
    task            text NOT NULL CHECK (task IN ('purchase', 'next_event')),
    horizon_days    integer NOT NULL CHECK (horizon_days BETWEEN 1 AND 365),
    hyper           jsonb NOT NULL,
    vocabulary      jsonb NOT NULL,
    classes         jsonb NOT NULL,
    weights         bytea NOT NULL,
    -- The time windows and example counts of the split.
    data_window     jsonb NOT NULL,
    -- Test-window report of the model and of the baselines on the same examples.
    evaluation      jsonb NOT NULL,
    -- Loss per epoch.
    epochs          jsonb NOT NULL,
    beats_baseline  boolean NOT NULL,
    active          boolean NOT NULL DEFAULT false,
    created_at      timestamptz NOT NULL DEFAULT now(),
    activated_at    timestamptz,
    PRIMARY KEY (tenant_id, id)
);
CREATE UNIQUE INDEX models_active ON profiling.models (tenant_id, task) WHERE active;
