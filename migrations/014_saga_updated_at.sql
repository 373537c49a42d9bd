-- 014_saga_updated_at: an index on saga_instances by last update, newest
-- first. It serves the two reads that span every saga: `dtxctl saga list`
-- (and List, the operator API) without a status filter reads the newest 50
-- from its head instead of sorting the whole table, and the orchestrator's
-- pruner reads the oldest finished sagas from its tail, a batch at a time,
-- instead of every finished saga. Building it takes a lock that holds
-- writers of saga_instances for as long as it lasts (seconds per million
-- sagas).

CREATE INDEX saga_instances_updated_at_idx ON {{.schema}}.saga_instances (updated_at DESC, id);

---- create above / drop below ----

DROP INDEX {{.schema}}.saga_instances_updated_at_idx;
