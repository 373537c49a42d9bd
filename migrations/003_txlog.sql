-- 003_txlog: what every log table shares (package internal/txlog). A log is
-- an append-only table read in commit-safe order: each row carries the id of
-- the transaction that wrote it (tx_id xid8 DEFAULT pg_current_xact_id()) and
-- an identity position, and readers take rows by (tx_id, position) below the
-- oldest running transaction. Log tables themselves come with the features
-- that own them (outbox, event store); this migration holds the readers'
-- checkpoints and the trigger function that wakes listening readers.

-- A reader's checkpoint is the (tx_id, position) of the last row it has
-- handled. A checkpoint only moves forward, and retention deletes only rows
-- at or before the lowest checkpoint of their log: registered readers never
-- lose unread rows. log_name is the log table's name in this schema.
CREATE TABLE {{.schema}}.txlog_checkpoints (
    log_name   text        NOT NULL,
    reader     text        NOT NULL,
    tx_id      xid8        NOT NULL,
    position   bigint      NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT txlog_checkpoints_pkey PRIMARY KEY (log_name, reader),
    CONSTRAINT txlog_checkpoints_log_name_length CHECK (octet_length(log_name) BETWEEN 1 AND 63),
    CONSTRAINT txlog_checkpoints_reader_length CHECK (octet_length(reader) BETWEEN 1 AND 255),
    CONSTRAINT txlog_checkpoints_position CHECK (position >= 0)
);

COMMENT ON TABLE {{.schema}}.txlog_checkpoints IS
    'Position of the last row each reader of each log table has handled (dtx).';

-- txlog_notify is the trigger function a log table's migration attaches to
-- wake readers at commit, for example:
--   CREATE TRIGGER outbox_notify AFTER INSERT ON {{.schema}}.outbox
--       FOR EACH STATEMENT EXECUTE FUNCTION {{.schema}}.txlog_notify('dtx_outbox');
-- Its one argument is the channel. PostgreSQL delivers a transaction's
-- notifications when it commits, once per channel and payload, and drops them
-- when it rolls back.
CREATE FUNCTION {{.schema}}.txlog_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(TG_ARGV[0], '');
    RETURN NULL;
END
$$;

COMMENT ON FUNCTION {{.schema}}.txlog_notify() IS
    'Trigger function: pg_notify(<first trigger argument>, '''') to wake log readers (dtx).';

---- create above / drop below ----

DROP FUNCTION {{.schema}}.txlog_notify();
DROP TABLE {{.schema}}.txlog_checkpoints;
