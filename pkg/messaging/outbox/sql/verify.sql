-- Reports whether a transaction with a higher id than this one has committed
-- a row of topic $1 and one of the keys $2: run by Lock, after the key locks
-- were granted, when the transaction already held its id (see insert.sql).
SELECT (
    SELECT true
    FROM {{.schema}}.outbox AS o
    WHERE o.tx_id > pg_current_xact_id() AND o.topic = $1::text AND o.key = ANY ($2::text[])
    ORDER BY o.tx_id, o.position -- walk the primary key from this transaction on
    LIMIT 1
) IS NOT NULL
