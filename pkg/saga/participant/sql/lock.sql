-- lock: serialises the commands of one saga step of one participant, whatever
-- their phase, until the transaction ends. Without it an action and its
-- compensation handled at once by two consumers could each miss the other's
-- uncommitted barrier row. $1 participant, $2 saga id, $3 step, $4 seed. The
-- lock id hashes the three values joined by U+001F, which none of them holds
-- (CloudEvents attributes and participant names exclude control
-- characters); a collision of two ids costs waiting, never correctness.
--
-- It returns the transaction's isolation level: the statements after it must
-- see what the previous holder of the lock committed, which REPEATABLE READ
-- does not guarantee.
SELECT current_setting('transaction_isolation')
FROM (SELECT pg_advisory_xact_lock(
        hashtextextended($1::text || chr(31) || $2::text || chr(31) || $3::text, $4::bigint))) AS l
