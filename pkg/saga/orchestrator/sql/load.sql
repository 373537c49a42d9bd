-- load: the batch's existing sagas ($1 ids), locked for the transaction.
SELECT id, state, trace_parent, trace_state
FROM {{.schema}}.saga_instances
WHERE id = ANY ($1::text[])
ORDER BY id
FOR UPDATE
