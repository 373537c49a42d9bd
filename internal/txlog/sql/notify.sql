-- notify: wakes listeners of channel $1. Inside a transaction PostgreSQL
-- delivers it at commit, and not at all on rollback.
SELECT pg_notify($1, '')
