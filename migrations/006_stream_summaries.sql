-- 006_stream_summaries: the read model of the built-in stream_summaries
-- projection (package pkg/projection, StreamSummaries): one row per event
-- stream, kept by the projector from the event store's global log. Its rows
-- commit with the projection's checkpoint (reader "stream_summaries" of log
-- "events" in txlog_checkpoints); a rebuild replaces the table by a shadow
-- copy named stream_summaries_rebuild.
CREATE TABLE {{.schema}}.stream_summaries (
    stream_id       text        NOT NULL,
    stream_type     text        NOT NULL,
    -- The version of the stream's last event the projection applied.
    version         bigint      NOT NULL,
    last_event_type text        NOT NULL,
    last_event_id   text        NOT NULL,
    -- The events of the stream the projection applied.
    event_count     bigint      NOT NULL,
    -- The recorded_at of the last event: a rebuild yields the same value.
    updated_at      timestamptz NOT NULL,
    CONSTRAINT stream_summaries_pkey PRIMARY KEY (stream_id),
    CONSTRAINT stream_summaries_version_positive CHECK (version >= 1),
    CONSTRAINT stream_summaries_event_count_positive CHECK (event_count >= 1)
);

COMMENT ON TABLE {{.schema}}.stream_summaries IS
    'Per event stream: type, version, last event and event count, kept by the stream_summaries projection (dtx).';

---- create above / drop below ----

DROP TABLE IF EXISTS {{.schema}}.stream_summaries_rebuild;
DROP TABLE {{.schema}}.stream_summaries;
-- Without its table the projection starts over when the table comes back.
DELETE FROM {{.schema}}.txlog_checkpoints
    WHERE log_name = 'events'
      AND (reader = 'stream_summaries' OR starts_with(reader, 'stream_summaries.rebuild-'));
