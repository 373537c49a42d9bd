-- hold: copies the outbox row ($1 tx_id, $2 position) to outbox_held for the
-- relay $3 with the reason $4 and the holding replica $5. Run in the
-- transaction that saves the checkpoint past the row. The outbox row stays:
-- other readers still read it, and retention deletes it.
INSERT INTO {{.schema}}.outbox_held (reader, tx_id, position, topic, key, headers, payload, created_at, reason, held_by)
SELECT $3, tx_id, position, topic, key, headers, payload, created_at, $4, $5
FROM {{.schema}}.outbox
WHERE tx_id = $1::xid8 AND position = $2::bigint
ON CONFLICT (reader, tx_id, position) DO NOTHING
