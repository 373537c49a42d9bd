-- 004_outbox: the transactional outbox, a log table (see 003_txlog). A service
-- writes rows in its own transaction (package pkg/messaging/outbox); the
-- outbox relay reads them in gap-safe commit order and publishes each as one
-- Kafka record. Rows are deleted by retention once every registered reader
-- has passed them.
CREATE TABLE {{.schema}}.outbox (
    tx_id      xid8        NOT NULL DEFAULT pg_current_xact_id(),
    position   bigint      GENERATED ALWAYS AS IDENTITY,
    topic      text        NOT NULL,
    -- The record key (partition key); NULL for a record without a key.
    key        text,
    -- Record headers as a JSON object of strings (CloudEvents ce_* attributes,
    -- content-type, extensions).
    headers    jsonb       NOT NULL DEFAULT '{}'::jsonb,
    payload    bytea       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT outbox_pkey PRIMARY KEY (tx_id, position),
    CONSTRAINT outbox_topic_valid CHECK (topic ~ '^[a-zA-Z0-9._-]{1,249}$'),
    CONSTRAINT outbox_headers_object CHECK (jsonb_typeof(headers) = 'object'),
    -- Below Kafka's default message.max.bytes (1048588) with room for the
    -- record's framing; the application checks a configurable, smaller limit.
    CONSTRAINT outbox_record_size CHECK (
        octet_length(payload) + coalesce(octet_length(key), 0) + octet_length(headers::text) <= 1000000)
);

CREATE TRIGGER outbox_notify AFTER INSERT ON {{.schema}}.outbox
    FOR EACH STATEMENT EXECUTE FUNCTION {{.schema}}.txlog_notify('{{.schema_name}}.outbox');

COMMENT ON TABLE {{.schema}}.outbox IS
    'Messages written in service transactions, published to Kafka by the outbox relay (dtx).';

-- Rows the broker refused for good (too large, topic forbidden, ...), set
-- aside with the reason so that they do not block the rows after them.
-- Operators inspect, fix and re-enqueue or delete them.
CREATE TABLE {{.schema}}.outbox_rejected (
    tx_id       xid8        NOT NULL,
    position    bigint      NOT NULL,
    topic       text        NOT NULL,
    key         text,
    headers     jsonb       NOT NULL,
    payload     bytea       NOT NULL,
    created_at  timestamptz NOT NULL,
    reason      text        NOT NULL,
    rejected_by text        NOT NULL,
    rejected_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT outbox_rejected_pkey PRIMARY KEY (tx_id, position)
);

COMMENT ON TABLE {{.schema}}.outbox_rejected IS
    'Outbox rows the broker refused for good, with the reason (dtx).';

-- One row per relay lease: the replica holding it publishes; the token
-- increases at every takeover and fences checkpoints of an older holder.
CREATE TABLE {{.schema}}.relay_leases (
    name        text        NOT NULL,
    holder      text        NOT NULL,
    token       bigint      NOT NULL,
    expires_at  timestamptz NOT NULL,
    acquired_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT relay_leases_pkey PRIMARY KEY (name),
    CONSTRAINT relay_leases_name_length CHECK (octet_length(name) BETWEEN 1 AND 255),
    CONSTRAINT relay_leases_holder_length CHECK (octet_length(holder) BETWEEN 1 AND 255)
);

COMMENT ON TABLE {{.schema}}.relay_leases IS
    'Which outbox relay replica may publish, until when, with a fencing token (dtx).';

---- create above / drop below ----

DROP TABLE {{.schema}}.relay_leases;
DROP TABLE {{.schema}}.outbox_rejected;
DROP TABLE {{.schema}}.outbox;
