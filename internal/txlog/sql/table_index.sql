-- table_index: whether the table $1 (quoted, qualified name) has a valid,
-- unique, non-partial index whose keys are exactly (tx_id, position), both
-- ascending: the index every read and every prune walks.
SELECT EXISTS (
    SELECT 1
    FROM pg_index i
    WHERE i.indrelid = to_regclass($1)
      AND i.indisunique AND i.indisvalid AND i.indpred IS NULL
      AND i.indnkeyatts = 2
      AND i.indkey[0] = (SELECT attnum FROM pg_attribute WHERE attrelid = i.indrelid AND attname = 'tx_id')
      AND i.indkey[1] = (SELECT attnum FROM pg_attribute WHERE attrelid = i.indrelid AND attname = 'position')
      AND i.indoption[0] = 0 AND i.indoption[1] = 0
)
