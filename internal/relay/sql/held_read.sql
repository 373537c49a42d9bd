-- held_read: the oldest $3 rows the relay $1 holds for topic $2, in outbox
-- order.
SELECT tx_id, position, topic, key, headers, payload, created_at
FROM {{.schema}}.outbox_held
WHERE reader = $1 AND topic = $2
ORDER BY tx_id, position
LIMIT $3
