-- 013_saga_operator: who made each operator entry of a saga's timeline. The
-- orchestrator's operator API records the credential's name (or what the
-- caller says, when the credential names no one) beside the entry of a
-- retry, abort or compensation it applies; the entry's detail holds the
-- reason. Other entries leave it NULL.

ALTER TABLE {{.schema}}.saga_history ADD COLUMN actor text;

COMMENT ON COLUMN {{.schema}}.saga_history.actor IS
    'Who made an operator entry (retry, abort, compensate), else NULL (dtx).';

---- create above / drop below ----

ALTER TABLE {{.schema}}.saga_history DROP COLUMN actor;
