-- Profiles are merged in the service now (reading and locking the rows), which measured
-- far cheaper than merging jsonb count maps in SQL per row.
DROP FUNCTION profiling.add_counts(jsonb, jsonb);
DROP FUNCTION profiling.add_arrays(bigint[], bigint[]);
