-- outbox: inserts the batch's commands and lifecycle events ($1 topics, $2
-- keys, NULL for none, $3 headers, $4 payloads: outbox.Records, already
-- checked) in array order. Runs after the outbox's lock of every (topic, key)
-- of them, taken before the transaction got its id.
INSERT INTO {{.schema}}.outbox (topic, key, headers, payload)
SELECT r.topic, r.key, r.headers, r.payload
FROM unnest($1::text[], $2::text[], $3::jsonb[], $4::bytea[]) WITH ORDINALITY AS r(topic, key, headers, payload, n)
ORDER BY r.n
