-- 015_txlog_wake_once: queue the outbox's and the events' wake-up once per
-- transaction instead of once per row.
--
-- Migration 010 decides a writer's wake-up at commit with a deferred
-- constraint trigger. PostgreSQL has no deferred statement-level trigger, so
-- every inserted row queued a trigger event and ran the trigger function at
-- commit; only the first did any work. A WHEN condition is evaluated as the
-- row is inserted, and an event whose condition is false is never queued:
-- the condition below is true for the first row a transaction inserts into
-- the table and false for the others: the first sets a transaction-local
-- setting that records that the wake-up is queued (a CASE, so that the
-- setting is read before it is set). The function runs once per transaction and
-- table, at commit, as before; each further row costs one lookup of the
-- setting. A savepoint rolled back takes its queued wake-up and the setting
-- with it, so the next row queues it again.
--
-- Replacing a trigger briefly locks its table against writers.

DROP TRIGGER outbox_notify ON {{.schema}}.outbox;
CREATE CONSTRAINT TRIGGER outbox_notify AFTER INSERT ON {{.schema}}.outbox
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
    WHEN (CASE WHEN current_setting('dtx.txlog_wake_queued.{{.schema_name}}.outbox', true) IS DISTINCT FROM 'yes'
               THEN set_config('dtx.txlog_wake_queued.{{.schema_name}}.outbox', 'yes', true) = 'yes'
               ELSE false END)
    EXECUTE FUNCTION {{.schema}}.txlog_notify_at_commit('{{.schema_name}}.outbox');

DROP TRIGGER events_notify ON {{.schema}}.events;
CREATE CONSTRAINT TRIGGER events_notify AFTER INSERT ON {{.schema}}.events
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
    WHEN (CASE WHEN current_setting('dtx.txlog_wake_queued.{{.schema_name}}.events', true) IS DISTINCT FROM 'yes'
               THEN set_config('dtx.txlog_wake_queued.{{.schema_name}}.events', 'yes', true) = 'yes'
               ELSE false END)
    EXECUTE FUNCTION {{.schema}}.txlog_notify_at_commit('{{.schema_name}}.events');

---- create above / drop below ----

DROP TRIGGER events_notify ON {{.schema}}.events;
CREATE CONSTRAINT TRIGGER events_notify AFTER INSERT ON {{.schema}}.events
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
    EXECUTE FUNCTION {{.schema}}.txlog_notify_at_commit('{{.schema_name}}.events');

DROP TRIGGER outbox_notify ON {{.schema}}.outbox;
CREATE CONSTRAINT TRIGGER outbox_notify AFTER INSERT ON {{.schema}}.outbox
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
    EXECUTE FUNCTION {{.schema}}.txlog_notify_at_commit('{{.schema_name}}.outbox');
