-- held_topics: the topics the relay $1 holds rows of, with how many, since
-- when, and why the oldest was held.
SELECT topic, count(*), min(held_at), (array_agg(reason ORDER BY tx_id, position))[1]
FROM {{.schema}}.outbox_held
WHERE reader = $1
GROUP BY topic
