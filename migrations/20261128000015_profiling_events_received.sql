-- Incremental scoring asks which customers have events received after a time. Events are
-- appended in arrival order, so a BRIN index on received_at finds the recent ones by
-- reading only the last block ranges, and costs next to nothing on ingestion (a B-tree
-- here would slow every insert). autosummarize lets autovacuum summarise each range as it
-- fills; ranges not summarised yet are always read, so recent events are never missed.
CREATE INDEX events_received ON profiling.events USING brin (received_at)
    WITH (autosummarize = on);
