-- 001_inbox: the message inbox. A handler records (consumer, message_id) in the
-- same transaction as its effect; the primary key turns a redelivered message
-- into a conflict, so its effect happens once. Rows are kept until expires_at,
-- which must outlast any redelivery window, then swept by expiry.

CREATE TABLE {{.schema}}.inbox (
    consumer    text        NOT NULL,
    message_id  text        NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    CONSTRAINT inbox_pkey PRIMARY KEY (consumer, message_id),
    CONSTRAINT inbox_consumer_length CHECK (octet_length(consumer) BETWEEN 1 AND 255),
    CONSTRAINT inbox_message_id_length CHECK (octet_length(message_id) BETWEEN 1 AND 512)
);

CREATE INDEX inbox_expires_at_idx ON {{.schema}}.inbox (expires_at);

COMMENT ON TABLE {{.schema}}.inbox IS
    'Messages each consumer has processed, recorded with their effect to drop redeliveries (dtx).';

---- create above / drop below ----

DROP TABLE {{.schema}}.inbox;
