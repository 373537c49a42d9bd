-- horizon_blocker: the session, or the prepared transaction, whose
-- transaction id is $1 (the horizon, as a 32-bit xid in text). Only columns
-- that PostgreSQL shows to every role are read: pid, datname, usename,
-- application_name and backend_xid of pg_stat_activity (xact_start, state
-- and query of other roles' sessions need pg_read_all_stats), and
-- pg_prepared_xacts, which every role may read. No row when the
-- transaction ended meanwhile.
SELECT a.pid, coalesce(a.datname, ''), coalesce(a.usename, ''), coalesce(a.application_name, ''), ''
FROM pg_stat_activity a
WHERE a.backend_xid = $1::text::xid
UNION ALL
SELECT 0, p.database::text, p.owner::text, '', p.gid
FROM pg_prepared_xacts p
WHERE p.transaction = $1::text::xid
LIMIT 1
