-- reject: moves the outbox row ($1 tx_id, $2 position) to outbox_rejected
-- with the reason $3 and the rejecting holder $4. Run in the transaction
-- that saves the checkpoint past the row.
WITH moved AS (
    DELETE FROM {{.schema}}.outbox
    WHERE tx_id = $1::xid8 AND position = $2::bigint
    RETURNING tx_id, position, topic, key, headers, payload, created_at
)
INSERT INTO {{.schema}}.outbox_rejected (tx_id, position, topic, key, headers, payload, created_at, reason, rejected_by)
SELECT tx_id, position, topic, key, headers, payload, created_at, $3, $4
FROM moved
ON CONFLICT (tx_id, position) DO NOTHING
