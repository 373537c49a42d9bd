-- history: appends timeline entries ($1: a jsonb array), in array order.
INSERT INTO {{.schema}}.saga_history (saga_id, at, step, phase, attempt, outcome, reply_type, detail, actor)
SELECT x.saga_id, x.at, x.step, x.phase, x.attempt, x.outcome, x.reply_type, x.detail, nullif(x.actor, '')
FROM jsonb_array_elements($1::jsonb) WITH ORDINALITY AS e(r, n),
     jsonb_to_record(e.r) AS x(
         saga_id text, at timestamptz, step text, phase text, attempt integer,
         outcome text, reply_type text, detail text, actor text)
ORDER BY e.n
