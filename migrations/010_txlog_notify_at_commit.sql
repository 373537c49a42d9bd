-- 010_txlog_notify_at_commit: wake log readers from a deferred trigger that
-- runs at commit, and let one committing transaction at a time notify.
--
-- PostgreSQL serialises the commits of transactions that notify (a lock held
-- through the WAL flush), which took group commit away from concurrent
-- writers of the outbox and the event store. Now a writer's wake-up is decided
-- as it commits: if another committing transaction holds the notify lock of
-- the channel, this one leaves the wake-up to it and commits without
-- notifying; readers read once more shortly after every wake-up
-- (txlog.Subscription.Wait) to pick up what such writers commit next. The
-- first row of a transaction does the work; its other rows return at once.

CREATE FUNCTION {{.schema}}.txlog_notify_at_commit() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    flag text := 'dtx.txlog_notify_' || substr(md5(TG_ARGV[0]), 1, 16);
BEGIN
    IF current_setting(flag, true) IS DISTINCT FROM 'done' THEN
        PERFORM set_config(flag, 'done', true);
        IF pg_try_advisory_xact_lock(hashtextextended('dtx.txlog_notify' || chr(31) || TG_ARGV[0], 0)) THEN
            PERFORM pg_notify(TG_ARGV[0], '');
        END IF;
    END IF;
    RETURN NULL;
END
$$;

COMMENT ON FUNCTION {{.schema}}.txlog_notify_at_commit() IS
    'Deferred trigger function: at commit, pg_notify(<first trigger argument>, '''') unless another committing transaction is notifying the channel (dtx).';

DROP TRIGGER outbox_notify ON {{.schema}}.outbox;
CREATE CONSTRAINT TRIGGER outbox_notify AFTER INSERT ON {{.schema}}.outbox
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
    EXECUTE FUNCTION {{.schema}}.txlog_notify_at_commit('{{.schema_name}}.outbox');

DROP TRIGGER events_notify ON {{.schema}}.events;
CREATE CONSTRAINT TRIGGER events_notify AFTER INSERT ON {{.schema}}.events
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
    EXECUTE FUNCTION {{.schema}}.txlog_notify_at_commit('{{.schema_name}}.events');

---- create above / drop below ----

DROP TRIGGER events_notify ON {{.schema}}.events;
CREATE TRIGGER events_notify AFTER INSERT ON {{.schema}}.events
    FOR EACH STATEMENT EXECUTE FUNCTION {{.schema}}.txlog_notify('{{.schema_name}}.events');

DROP TRIGGER outbox_notify ON {{.schema}}.outbox;
CREATE TRIGGER outbox_notify AFTER INSERT ON {{.schema}}.outbox
    FOR EACH STATEMENT EXECUTE FUNCTION {{.schema}}.txlog_notify('{{.schema_name}}.outbox');

DROP FUNCTION {{.schema}}.txlog_notify_at_commit();
