-- 002_idempotency_keys: HTTP idempotency keys. The first request with a key
-- inserts a 'running' row; the request's effect and the switch to 'completed'
-- with the stored response commit together, so a retry with the same key gets
-- the stored response instead of a second effect. A retry whose request
-- fingerprint differs is a client error, detected by comparing fingerprints.
-- The application sets expires_at (24 hours after creation by default).

CREATE TABLE {{.schema}}.idempotency_keys (
    scope               text        NOT NULL,
    key                 text        NOT NULL,
    request_fingerprint bytea       NOT NULL,
    state               text        NOT NULL DEFAULT 'running',
    response_status     integer,
    response_headers    jsonb,
    response_body       bytea,
    created_at          timestamptz NOT NULL DEFAULT now(),
    expires_at          timestamptz NOT NULL,
    CONSTRAINT idempotency_keys_pkey PRIMARY KEY (scope, key),
    CONSTRAINT idempotency_keys_scope_length CHECK (octet_length(scope) BETWEEN 1 AND 255),
    CONSTRAINT idempotency_keys_key_length CHECK (octet_length(key) BETWEEN 1 AND 255),
    CONSTRAINT idempotency_keys_fingerprint_length CHECK (octet_length(request_fingerprint) BETWEEN 1 AND 64),
    CONSTRAINT idempotency_keys_state CHECK (state IN ('running', 'completed')),
    CONSTRAINT idempotency_keys_response_status CHECK (response_status BETWEEN 100 AND 599),
    CONSTRAINT idempotency_keys_response_headers CHECK (jsonb_typeof(response_headers) = 'object'),
    CONSTRAINT idempotency_keys_completed_has_response CHECK (state = 'running' OR response_status IS NOT NULL)
);

CREATE INDEX idempotency_keys_expires_at_idx ON {{.schema}}.idempotency_keys (expires_at);

COMMENT ON TABLE {{.schema}}.idempotency_keys IS
    'HTTP idempotency keys with the stored response of each completed request (dtx).';

---- create above / drop below ----

DROP TABLE {{.schema}}.idempotency_keys;
