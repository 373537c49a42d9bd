-- append: inserts the events of one append and their outbox rows if the
-- stream is at the expected version, in one statement. Runs after the
-- stream's lock is held (taken as the transaction's first statement), so at
-- READ COMMITTED its snapshot sees every earlier append of the stream. The
-- stream's lock is the outbox's lock of the rows' key (topic, stream id).
-- $1 stream_id, $2 stream_type, $3 expected version (-1 any, -2 the stream
-- exists, >= 0 exactly that version), then one array element per event:
-- $4 event ids, $5 types, $6 schema versions, $7 data, $8 metadata.
-- $9 true when it runs in one pipeline with the lock, before the lock's
-- order check is known: it then writes only if the transaction has no
-- transaction id yet, in which case the lock cannot be an order risk.
-- The outbox rows: topic $10, then per event key $11, headers $12 (their
-- ce_streamversion and ce_time are set here: the version found plus the
-- event's place, and the transaction's start as messaging encodes times),
-- payload $13.
--
-- Returns the version found, whether the stream type and the version
-- matched, whether it could write ($9), and of the rows inserted (none
-- unless all three hold) the count,
-- the transaction id, the last position and the recording time.
WITH last AS MATERIALIZED (
    SELECT e.version, e.stream_type
    FROM {{.schema}}.events AS e
    WHERE e.stream_id = $1::text
    ORDER BY e.version DESC
    LIMIT 1
), cur AS MATERIALIZED (
    SELECT coalesce((SELECT version FROM last), 0) AS version,
           coalesce((SELECT stream_type FROM last) = $2::text, true) AS type_ok
), ok AS MATERIALIZED (
    SELECT cur.version, cur.type_ok,
           CASE WHEN $3::bigint = -1 THEN true
                WHEN $3::bigint = -2 THEN cur.version > 0
                ELSE cur.version = $3::bigint
           END AS version_ok,
           ($9::boolean IS NOT TRUE OR pg_current_xact_id_if_assigned() IS NULL) AS may_write,
           -- RFC 3339 in UTC without trailing zeros, as Go's RFC3339Nano.
           regexp_replace(to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US'), '\.?0+$', '') || 'Z' AS at
    FROM cur
), ins AS (
    INSERT INTO {{.schema}}.events (stream_id, stream_type, version, event_id, type, schema_version, data, metadata)
    SELECT $1::text, $2::text, ok.version + r.n, r.id, r.type, r.schema_version, r.data, r.metadata
    FROM ok, unnest($4::text[], $5::text[], $6::integer[], $7::jsonb[], $8::jsonb[])
        WITH ORDINALITY AS r(id, type, schema_version, data, metadata, n)
    WHERE ok.type_ok AND ok.version_ok AND ok.may_write
    ORDER BY r.n
    RETURNING tx_id, position, recorded_at
), outbox AS (
    INSERT INTO {{.schema}}.outbox (topic, key, headers, payload)
    SELECT $10::text, r.key,
           r.headers || jsonb_build_object('ce_streamversion', (ok.version + r.n)::text, 'ce_time', ok.at),
           r.payload
    FROM ok, unnest($11::text[], $12::jsonb[], $13::bytea[]) WITH ORDINALITY AS r(key, headers, payload, n)
    WHERE ok.type_ok AND ok.version_ok AND ok.may_write
    ORDER BY r.n
)
SELECT ok.version, ok.type_ok, ok.version_ok, ok.may_write,
       (SELECT count(*) FROM ins),
       coalesce((SELECT tx_id FROM ins LIMIT 1), '0'::xid8),
       coalesce((SELECT max(position) FROM ins), 0),
       (SELECT min(recorded_at) FROM ins)
FROM ok
