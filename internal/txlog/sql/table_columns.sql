-- table_columns: the columns of the table $1 (quoted, qualified name): name,
-- type, NOT NULL, identity kind ('' if none) and default expression ('' if
-- none). No rows when the table does not exist.
SELECT a.attname::text,
       format_type(a.atttypid, a.atttypmod),
       a.attnotnull,
       a.attidentity::text,
       coalesce(pg_get_expr(d.adbin, d.adrelid), '')
FROM pg_attribute a
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
