-- 007_saga_barrier: the barrier of saga participants (package
-- pkg/saga/participant). A participant records each command of a saga step
-- it handles, one row per (participant, saga, step, phase), in the same
-- transaction as the command's effect and its reply: a redelivered command
-- conflicts on the primary key and changes nothing, and a compensation that
-- arrives before its action leaves a row that makes the late action refused.
-- participant names the service, so several services may share a schema.
-- Rows are deleted by retention (created_at), which must outlast the sagas.

CREATE TABLE {{.schema}}.saga_barrier (
    participant text        NOT NULL,
    saga_id     text        NOT NULL,
    step        text        NOT NULL,
    phase       text        NOT NULL,
    -- applied: the handler ran and committed; rejected: the action's handler
    -- refused it (business failure) and its writes were discarded; refused:
    -- the action came after the compensation and was not run; empty: the
    -- compensation found nothing to undo and its handler did not run.
    outcome     text        NOT NULL,
    -- The type of the reply sent; NULL when none was (refused).
    reply_type  text,
    -- The CloudEvents id (ce_id) of the command.
    command_id  text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT saga_barrier_pkey PRIMARY KEY (participant, saga_id, step, phase),
    CONSTRAINT saga_barrier_participant_length CHECK (octet_length(participant) BETWEEN 1 AND 255),
    CONSTRAINT saga_barrier_saga_id_length CHECK (octet_length(saga_id) BETWEEN 1 AND 255),
    CONSTRAINT saga_barrier_step_length CHECK (octet_length(step) BETWEEN 1 AND 255),
    CONSTRAINT saga_barrier_phase CHECK (phase IN ('action', 'compensation')),
    CONSTRAINT saga_barrier_outcome CHECK (outcome IN ('applied', 'rejected', 'refused', 'empty')),
    CONSTRAINT saga_barrier_phase_outcome CHECK (
        (phase = 'action' AND outcome IN ('applied', 'rejected', 'refused'))
        OR (phase = 'compensation' AND outcome IN ('applied', 'empty'))),
    CONSTRAINT saga_barrier_reply_type_length CHECK (octet_length(reply_type) BETWEEN 1 AND 255),
    CONSTRAINT saga_barrier_command_id_length CHECK (octet_length(command_id) BETWEEN 1 AND 512)
);

CREATE INDEX saga_barrier_created_at_idx ON {{.schema}}.saga_barrier (participant, created_at);

COMMENT ON TABLE {{.schema}}.saga_barrier IS
    'Saga commands each participant has handled, per step and phase, with their outcome, to drop redeliveries and refuse late actions (dtx).';

---- create above / drop below ----

DROP TABLE {{.schema}}.saga_barrier;
