-- lock: first statement of the request's transaction. Takes the key's
-- transaction-scoped advisory lock until the transaction ends, so that no
-- takeover (takeover.sql tries the same lock) can happen while the request
-- runs. An advisory lock gives the transaction no id, unlike a row lock: the
-- handler may still take outbox.Lock and the event store's locks as its
-- first locks (per-key commit order, see the outbox's docs). $1 scope, $2
-- key, $3 seed. The lock id hashes scope and key joined by U+001F, which a
-- scope never holds; a collision of two ids costs waiting, never
-- correctness.
SELECT pg_advisory_xact_lock(hashtextextended($1::text || chr(31) || $2::text, $3::bigint))
