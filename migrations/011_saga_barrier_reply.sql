-- 011_saga_barrier_reply: the barrier of saga participants (package
-- pkg/saga/participant) keeps the reply it sent, so that a command sent again
-- (the orchestrator's next attempt of a step, an operator's retry) is answered
-- with that reply instead of nothing: the handler does not run twice, and
-- the orchestrator still gets its answer when the first reply did not reach
-- it in time.
--
-- The reply is kept as the record the outbox was given: its headers (a JSON
-- object of strings, as in the outbox table) and its payload. Rows written
-- before this migration have none; a command sent again for such a row is
-- answered as before (see the package documentation).

ALTER TABLE {{.schema}}.saga_barrier
    ADD COLUMN reply_headers jsonb,
    ADD COLUMN reply_payload bytea,
    ADD CONSTRAINT saga_barrier_reply_recorded CHECK ((reply_headers IS NULL) = (reply_payload IS NULL)),
    ADD CONSTRAINT saga_barrier_reply_has_type CHECK (reply_headers IS NULL OR reply_type IS NOT NULL);

COMMENT ON COLUMN {{.schema}}.saga_barrier.reply_headers IS
    'Headers of the reply sent for the command (NULL: none sent, or a row written before replies were kept) (dtx).';
COMMENT ON COLUMN {{.schema}}.saga_barrier.reply_payload IS
    'Payload of the reply sent for the command, with reply_headers (dtx).';

---- create above / drop below ----

ALTER TABLE {{.schema}}.saga_barrier
    DROP CONSTRAINT saga_barrier_reply_has_type,
    DROP CONSTRAINT saga_barrier_reply_recorded,
    DROP COLUMN reply_payload,
    DROP COLUMN reply_headers;
