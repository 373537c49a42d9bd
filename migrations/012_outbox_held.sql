-- 012_outbox_held: outbox rows a relay holds back because their topic cannot
-- take them for now (it does not exist, the relay may not write it, a policy
-- refuses it), so that the rows of the other topics are not held up behind
-- them. The relay copies a held topic's rows here, in the transaction that
-- moves its checkpoint past them, and every later row of that topic too
-- while the topic has rows here; it publishes them, oldest first, as the
-- broker accepts them, deleting each once acknowledged. Rows are copied, not
-- moved: other readers of the outbox still read them there. One relay
-- (reader, its lease and checkpoint name) never sees another's held rows.
CREATE TABLE {{.schema}}.outbox_held (
    reader     text        NOT NULL,
    tx_id      xid8        NOT NULL,
    position   bigint      NOT NULL,
    topic      text        NOT NULL,
    key        text,
    headers    jsonb       NOT NULL,
    payload    bytea       NOT NULL,
    created_at timestamptz NOT NULL,
    -- Why the topic was held: the broker's error (UNKNOWN_TOPIC_OR_PARTITION, ...).
    reason     text        NOT NULL,
    held_by    text        NOT NULL,
    held_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT outbox_held_pkey PRIMARY KEY (reader, tx_id, position)
);

-- A held topic's rows, oldest first.
CREATE INDEX outbox_held_topic ON {{.schema}}.outbox_held (reader, topic, tx_id, position);

COMMENT ON TABLE {{.schema}}.outbox_held IS
    'Outbox rows of topics the broker does not take for now, published by the relay once it does (dtx).';

---- create above / drop below ----

DROP TABLE {{.schema}}.outbox_held;
