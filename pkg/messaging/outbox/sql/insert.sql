-- Inserts the rows of one Write: topic $1, keys $2 (NULL: no key), headers
-- $3, payloads $4, in array order. Runs after lock.sql in the same
-- transaction, so READ COMMITTED gives it a snapshot taken after the key
-- locks were granted.
--
-- When lock.sql found an order risk (dtx.outbox_order_risk) and $6 asks for
-- the check, it inserts nothing if a row of one of the keys $5 was committed
-- by a transaction with a higher id than this one: that row would be read
-- after this transaction's rows although it committed first. Such rows
-- cannot have been read or pruned yet, since no reader passes a transaction
-- that is still open. The check needs a snapshot newer than the locks, so it
-- is skipped above READ COMMITTED.
WITH probe AS MATERIALIZED (
    SELECT pg_current_xact_id_if_assigned() AS xid,
           coalesce(current_setting('dtx.outbox_order_risk', true), '') = 'true' AS risky,
           current_setting('transaction_isolation') = 'read committed' AS read_committed
), allowed AS MATERIALIZED (
    SELECT NOT (p.risky AND $6::boolean AND p.read_committed AND (
            SELECT true
            FROM {{.schema}}.outbox AS o
            WHERE o.tx_id > p.xid AND o.topic = $1::text AND o.key = ANY ($5::text[])
            ORDER BY o.tx_id, o.position -- walk the primary key from this transaction on
            LIMIT 1
        ) IS NOT NULL) AS ok
    FROM probe AS p
)
INSERT INTO {{.schema}}.outbox (topic, key, headers, payload)
SELECT $1::text, r.key, r.headers, r.payload
FROM allowed, unnest($2::text[], $3::jsonb[], $4::bytea[]) WITH ORDINALITY AS r(key, headers, payload, n)
WHERE allowed.ok
ORDER BY r.n
