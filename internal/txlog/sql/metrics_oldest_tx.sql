-- metrics_oldest_tx: the age in seconds of the oldest transaction, in the
-- whole cluster, that holds a transaction id: what holds every log reader's
-- horizon back. Read-only transactions have no id and hold nothing back.
-- Prepared (two-phase) transactions count from when they were prepared.
-- Without pg_read_all_stats, sessions of other roles are not seen.
SELECT coalesce(extract(epoch FROM now() - least(
    (SELECT min(xact_start) FROM pg_stat_activity WHERE backend_xid IS NOT NULL),
    (SELECT min(prepared) FROM pg_prepared_xacts)
)), 0)::float8
