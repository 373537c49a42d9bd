-- held_delete: forgets the held row ($2 tx_id, $3 position) of the relay $1,
-- once the broker acknowledged it.
DELETE FROM {{.schema}}.outbox_held
WHERE reader = $1 AND tx_id = $2::xid8 AND position = $3::bigint
