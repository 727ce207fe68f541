-- Incremental scoring: each model version remembers up to when events have been scored, so a
-- scoring pass after new events only re-scores the customers whose events arrived since.
ALTER TABLE profiling.models ADD COLUMN scored_through timestamptz;
