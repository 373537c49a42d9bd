-- claim: records a command of phase $4 ('action' or 'compensation') of step
-- $3 of saga $2 for participant $1, command id $5, reply type $6 (NULL when
-- not known yet), unless a row for the same phase exists. Runs after lock.sql
-- in the same transaction, so it sees every committed row of the step.
--
-- The outcome it records follows from the other phase's row:
--   action:       compensation present -> 'refused', else 'applied' (which
--                 the caller turns into 'rejected' if its handler rejects);
--   compensation: action 'applied' -> 'applied' (the handler runs), else
--                 'empty' (nothing was done here that could be undone).
--
-- It returns the outcome recorded (NULL: a row existed, the command is a
-- duplicate), the outcome of the other phase's row (NULL: none), and the
-- command id, the outcome and the recorded reply (headers and payload, NULL
-- when none was kept) of the existing row of the same phase (NULL: none).
WITH other AS MATERIALIZED (
    SELECT outcome
    FROM {{.schema}}.saga_barrier
    WHERE participant = $1 AND saga_id = $2 AND step = $3
      AND phase = CASE $4::text WHEN 'action' THEN 'compensation' ELSE 'action' END
), same AS MATERIALIZED (
    SELECT command_id, outcome, reply_headers, reply_payload
    FROM {{.schema}}.saga_barrier
    WHERE participant = $1 AND saga_id = $2 AND step = $3 AND phase = $4::text
), claimed AS (
    INSERT INTO {{.schema}}.saga_barrier (participant, saga_id, step, phase, outcome, reply_type, command_id)
    SELECT $1, $2, $3, $4::text,
           CASE
               WHEN $4::text = 'action' THEN
                   CASE WHEN EXISTS (SELECT 1 FROM other) THEN 'refused' ELSE 'applied' END
               WHEN (SELECT outcome FROM other) = 'applied' THEN 'applied'
               ELSE 'empty'
           END,
           $6::text, $5
    ON CONFLICT (participant, saga_id, step, phase) DO NOTHING
    RETURNING outcome
)
SELECT (SELECT outcome FROM claimed), (SELECT outcome FROM other), (SELECT command_id FROM same),
       (SELECT outcome FROM same), (SELECT reply_headers FROM same), (SELECT reply_payload FROM same)
