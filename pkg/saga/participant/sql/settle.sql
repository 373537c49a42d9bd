-- settle: records the final outcome $4 and the reply type $5 of the action of
-- step $3 of saga $2 for participant $1, once its handler has run.
UPDATE {{.schema}}.saga_barrier
SET outcome = $4, reply_type = $5
WHERE participant = $1 AND saga_id = $2 AND step = $3 AND phase = 'action'
