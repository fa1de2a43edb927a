-- The jobs table churns: every job is inserted, updated two or three times and later
-- pruned. Vacuum and analyze it after 1 % of its rows changed (the defaults wait for 20 %
-- and 10 %), so dead rows do not pile up in the poll index and the claim query keeps a
-- plan that walks that index instead of sorting every pending job.
ALTER TABLE jobs SET (
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_threshold = 100,
    autovacuum_analyze_scale_factor = 0.01,
    autovacuum_analyze_threshold = 100
);
