-- held_count: how many rows the relay $1 holds for topic $2.
SELECT count(*)
FROM {{.schema}}.outbox_held
WHERE reader = $1 AND topic = $2
