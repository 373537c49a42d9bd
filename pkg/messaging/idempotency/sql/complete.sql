-- complete: stores the response, in the request's transaction, so that it
-- commits together with the request's effect. $1 scope, $2 key, $3 token,
-- $4 status, $5 headers, $6 body.
UPDATE {{.schema}}.idempotency_keys
SET state = 'completed',
    response_status = $4,
    response_headers = $5,
    response_body = $6
WHERE scope = $1 AND key = $2 AND xmin = $3 AND state = 'running'
