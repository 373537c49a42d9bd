-- 008_saga: saga instances and their timelines. The orchestrator loads and
-- locks one instance row per transition, writes the new state, the next
-- commands (outbox) and the history rows in the same transaction. due_at is
-- the next time the scheduler must look at the saga (a step timeout, a retry
-- backoff or the saga deadline); it is NULL once the saga is terminal or
-- parked.

CREATE TABLE {{.schema}}.saga_instances (
    id                 text        NOT NULL,
    definition         text        NOT NULL,
    definition_version integer     NOT NULL,
    status             text        NOT NULL,
    step               text,
    attempt            integer     NOT NULL DEFAULT 0,
    correlation_id     text        NOT NULL,
    state              jsonb       NOT NULL,
    reason             text,
    trace_parent       text,
    trace_state        text,
    due_at             timestamptz,
    revision           bigint      NOT NULL DEFAULT 1,
    started_at         timestamptz NOT NULL,
    updated_at         timestamptz NOT NULL,
    CONSTRAINT saga_instances_pkey PRIMARY KEY (id),
    CONSTRAINT saga_instances_id_length CHECK (octet_length(id) BETWEEN 1 AND 255),
    CONSTRAINT saga_instances_status_check CHECK (status IN ('running', 'compensating', 'completed', 'compensated', 'failed')),
    CONSTRAINT saga_instances_version_check CHECK (definition_version >= 1)
);

CREATE INDEX saga_instances_due_at_idx ON {{.schema}}.saga_instances (due_at) WHERE due_at IS NOT NULL;
CREATE INDEX saga_instances_status_idx ON {{.schema}}.saga_instances (status, updated_at);

COMMENT ON TABLE {{.schema}}.saga_instances IS
    'One row per saga: its definition version, status and state, and when the scheduler must wake it (dtx).';

CREATE TABLE {{.schema}}.saga_history (
    saga_id    text        NOT NULL,
    seq        bigint      GENERATED ALWAYS AS IDENTITY,
    at         timestamptz NOT NULL,
    step       text,
    phase      text,
    attempt    integer,
    outcome    text        NOT NULL,
    reply_type text,
    detail     text,
    CONSTRAINT saga_history_pkey PRIMARY KEY (saga_id, seq),
    CONSTRAINT saga_history_saga_fkey FOREIGN KEY (saga_id) REFERENCES {{.schema}}.saga_instances (id) ON DELETE CASCADE
);

COMMENT ON TABLE {{.schema}}.saga_history IS
    'The timeline of each saga: commands sent, replies, timeouts, retries and operator actions (dtx).';

---- create above / drop below ----

DROP TABLE {{.schema}}.saga_history;
DROP TABLE {{.schema}}.saga_instances;
