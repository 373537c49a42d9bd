-- 009_projection_streams: per projection, the version of the last event of
-- each event stream its read model holds (package pkg/projection). Every
-- source of a projection (the event store's global log, Kafka, a rebuild)
-- locks the rows of the streams it applies events of and moves them in the
-- same transaction as the read model, so an event delivered again, by the
-- same source or another, is recognised and skipped, and an event that
-- arrives after a gap in its stream is preceded by the missing ones.
-- A rebuild keeps the versions of its shadow tables under its own reader
-- name ("<projection>.rebuild-<n>") and merges them at the swap.
CREATE TABLE {{.schema}}.projection_streams (
    projection text   NOT NULL,
    stream_id  text   NOT NULL,
    -- The version of the stream's last event the projection handled
    -- (applied, or skipped as of a type it does not handle).
    version    bigint NOT NULL,
    CONSTRAINT projection_streams_pkey PRIMARY KEY (projection, stream_id),
    CONSTRAINT projection_streams_projection_length CHECK (octet_length(projection) BETWEEN 1 AND 255),
    CONSTRAINT projection_streams_version_not_negative CHECK (version >= 0)
);

COMMENT ON TABLE {{.schema}}.projection_streams IS
    'Per projection and event stream, the version of the last event the read model holds (dtx).';

-- Projections that ran from the global log before this table existed hold
-- every event up to their checkpoint: their streams start at those versions.
INSERT INTO {{.schema}}.projection_streams (projection, stream_id, version)
SELECT c.reader, e.stream_id, max(e.version)
FROM {{.schema}}.txlog_checkpoints c
JOIN {{.schema}}.events e ON (e.tx_id, e.position) <= (c.tx_id, c.position)
WHERE c.log_name = 'events' AND octet_length(c.reader) <= 255
GROUP BY c.reader, e.stream_id;

---- create above / drop below ----

DROP TABLE {{.schema}}.projection_streams;
