-- 005_events: the event store (package pkg/eventstore). events is a log table
-- (see 003_txlog): every append inserts a stream's next versions in the
-- writer's transaction, and the global read takes rows in gap-safe commit
-- order by (tx_id, position). (stream_id, version) is unique, so two writers
-- of the same version cannot both commit. snapshots keeps aggregate states
-- taken at a stream version, to load without replaying every event.
CREATE TABLE {{.schema}}.events (
    tx_id          xid8        NOT NULL DEFAULT pg_current_xact_id(),
    position       bigint      GENERATED ALWAYS AS IDENTITY,
    stream_id      text        NOT NULL,
    -- The stream's category, e.g. "order"; it picks the outbox topic.
    stream_type    text        NOT NULL,
    -- 1 for a stream's first event, then without gaps.
    version        bigint      NOT NULL,
    event_id       text        NOT NULL,
    type           text        NOT NULL,
    schema_version integer     NOT NULL,
    data           jsonb       NOT NULL,
    -- correlation_id, causation_id, traceparent, tracestate: an object of strings.
    metadata       jsonb       NOT NULL DEFAULT '{}'::jsonb,
    recorded_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT events_pkey PRIMARY KEY (tx_id, position),
    CONSTRAINT events_stream_version_key UNIQUE (stream_id, version),
    CONSTRAINT events_event_id_key UNIQUE (event_id),
    CONSTRAINT events_stream_id_length CHECK (octet_length(stream_id) BETWEEN 1 AND 255),
    CONSTRAINT events_stream_type_length CHECK (octet_length(stream_type) BETWEEN 1 AND 255),
    CONSTRAINT events_version_positive CHECK (version >= 1),
    CONSTRAINT events_event_id_length CHECK (octet_length(event_id) BETWEEN 1 AND 255),
    CONSTRAINT events_type_length CHECK (octet_length(type) BETWEEN 1 AND 255),
    CONSTRAINT events_schema_version_positive CHECK (schema_version >= 1),
    CONSTRAINT events_metadata_object CHECK (jsonb_typeof(metadata) = 'object')
);

CREATE TRIGGER events_notify AFTER INSERT ON {{.schema}}.events
    FOR EACH STATEMENT EXECUTE FUNCTION {{.schema}}.txlog_notify('{{.schema_name}}.events');

COMMENT ON TABLE {{.schema}}.events IS
    'Event streams: one row per event, read per stream by version or globally in commit order (dtx).';

-- A snapshot is an aggregate's state after the event at version of its
-- stream. Loading takes the latest one and the events after it; older ones
-- may be deleted at any time.
CREATE TABLE {{.schema}}.snapshots (
    stream_id      text        NOT NULL,
    version        bigint      NOT NULL,
    -- The state's type and schema version, so that a changed state shape
    -- can be recognised and ignored.
    type           text        NOT NULL,
    schema_version integer     NOT NULL,
    data           jsonb       NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT snapshots_pkey PRIMARY KEY (stream_id, version),
    CONSTRAINT snapshots_version_positive CHECK (version >= 1),
    CONSTRAINT snapshots_schema_version_positive CHECK (schema_version >= 1)
);

COMMENT ON TABLE {{.schema}}.snapshots IS
    'Aggregate states at a stream version, to load without replaying every event (dtx).';

---- create above / drop below ----

DROP TABLE {{.schema}}.snapshots;
DROP TABLE {{.schema}}.events;
