-- lock: takes the transaction-scoped advisory lock of each saga of the batch
-- ($1: lock keys, one per saga id) in ascending key order, so that two
-- batches never wait for each other in a cycle, and returns the database's
-- clock: every transition of the batch uses now(), never a local clock.
-- Advisory locks give the transaction no id, so the id it gets at its first
-- write comes after every earlier writer of these sagas committed. had_xid
-- says whether the transaction held an id already (a caller's transaction
-- that wrote before): then no lock taken now can order it.
SELECT now() AS now, count(pg_advisory_xact_lock(k)) AS locked,
       pg_current_xact_id_if_assigned() IS NOT NULL AS had_xid
FROM (SELECT k FROM unnest($1::bigint[]) AS k ORDER BY k) AS keys
