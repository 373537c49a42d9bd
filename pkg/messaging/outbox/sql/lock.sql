-- Takes the transaction-scoped advisory lock of the topic ($1) and each of
-- the keys ($2), in ascending lock id order so that two writers of several
-- keys cannot deadlock. The lock id of a key is
-- hashtextextended(topic || U+001F || key, seed $3); a topic never contains
-- U+001F, so distinct (topic, key) pairs give distinct inputs.
--
-- It reports whether the call is an order risk: the transaction already held
-- a transaction id (neither advisory locks nor this query assign one) and
-- locks at least one of the keys for the first time. The ids this
-- transaction has locked through the outbox are kept in the
-- transaction-local setting dtx.outbox_locks (a lock taken earlier was
-- checked when it was taken; rolling back to a savepoint releases its locks
-- and restores the setting alike), and the answer in dtx.outbox_order_risk,
-- for insert.sql, which runs next in the same pipeline. The sort makes every
-- key's state known before the first lock is taken.
WITH keys AS (
    SELECT DISTINCT hashtextextended($1::text || chr(31) || k.key, $3::bigint) AS id
    FROM unnest($2::text[]) AS k(key)
), held AS MATERIALIZED (
    SELECT coalesce(string_to_array(nullif(current_setting('dtx.outbox_locks', true), ''), ',')::bigint[], '{}') AS ids,
           pg_current_xact_id_if_assigned() IS NOT NULL AS had_xid
), state AS MATERIALIZED (
    SELECT keys.id, keys.id = ANY (held.ids) AS held
    FROM keys, held
)
SELECT set_config('dtx.outbox_order_risk',
           coalesce(bool_or(NOT s.held) AND (SELECT had_xid FROM held), false)::text, true) = 'true' AS risky,
       count(pg_advisory_xact_lock(s.id)) AS locked,
       current_setting('transaction_isolation') = 'read committed' AS read_committed,
       set_config('dtx.outbox_locks', array_to_string(
           (SELECT ids FROM held) || coalesce(array_agg(s.id) FILTER (WHERE NOT s.held), '{}'), ','), true) AS remembered
FROM (SELECT id, held FROM state ORDER BY id) AS s
