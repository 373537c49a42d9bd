-- held_reject: moves the held row ($2 tx_id, $3 position) of the relay $1 to
-- outbox_rejected with the reason $4 and the rejecting replica $5.
WITH moved AS (
    DELETE FROM {{.schema}}.outbox_held
    WHERE reader = $1 AND tx_id = $2::xid8 AND position = $3::bigint
    RETURNING tx_id, position, topic, key, headers, payload, created_at
)
INSERT INTO {{.schema}}.outbox_rejected (tx_id, position, topic, key, headers, payload, created_at, reason, rejected_by)
SELECT tx_id, position, topic, key, headers, payload, created_at, $4, $5
FROM moved
ON CONFLICT (tx_id, position) DO NOTHING
