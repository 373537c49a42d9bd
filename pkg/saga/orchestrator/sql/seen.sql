-- seen: which of the batch's messages ($2 ids) consumer $1 recorded before
-- (duplicates). A read: the transaction gets no id from it.
SELECT message_id
FROM {{.schema}}.inbox
WHERE consumer = $1 AND message_id = ANY ($2::text[])
