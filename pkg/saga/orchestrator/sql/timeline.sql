-- timeline: one saga's history, oldest first.
SELECT seq, at, coalesce(step, ''), coalesce(phase, ''), coalesce(attempt, 0), outcome, coalesce(reply_type, ''), coalesce(detail, ''), coalesce(actor, '')
FROM {{.schema}}.saga_history
WHERE saga_id = $1
ORDER BY seq
