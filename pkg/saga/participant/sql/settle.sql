-- settle: records the final outcome $5 (NULL: keep the one claim.sql
-- recorded), the reply type $6 and the reply sent (headers $7, payload $8) of
-- phase $4 of step $3 of saga $2 for participant $1, once its handler has
-- run.
UPDATE {{.schema}}.saga_barrier
SET outcome = coalesce($5::text, outcome), reply_type = $6, reply_headers = $7, reply_payload = $8
WHERE participant = $1 AND saga_id = $2 AND step = $3 AND phase = $4::text
