# Seed statements for the sql_guard fuzz target, one a line (lines starting with '#' skipped).
SELECT 1
SELECT did, count(*) FROM posts WHERE day = '20' GROUP BY did ORDER BY 2 DESC LIMIT 10
WITH t AS (SELECT did FROM likes) SELECT count(*) FROM t
WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 5) SELECT * FROM r
EXPLAIN SELECT * FROM posts WHERE day = '20'
EXPLAIN ANALYZE SELECT count(*) FROM events
EXPLAIN VERBOSE SELECT 1
SELECT * FROM generate_series(1, 3)
SELECT * FROM range(10) AS r(x) JOIN posts p ON p.time_us = r.x
SELECT 'DROP TABLE posts; --' AS text
VALUES (1), (2)
SELECT 1 UNION ALL SELECT 2 EXCEPT SELECT 3 INTERSECT SELECT 4
SELECT (SELECT max(time_us) FROM likes) AS newest, EXISTS (SELECT 1 FROM follows) AS any
SELECT CASE WHEN lang = 'en' THEN 1 ELSE 0 END, CAST(time_us AS DOUBLE), time_us::BIGINT FROM posts
SELECT a.did FROM posts a LEFT JOIN likes b USING (did) WHERE a.text LIKE '%x%' AND b.rkey IS NOT NULL
SELECT did, row_number() OVER (PARTITION BY did ORDER BY time_us) FROM posts QUALIFY 1 = 1
SELECT * FROM posts TABLESAMPLE (10 PERCENT)
SELECT * FROM UNNEST([1, 2, 3])
SELECT * FROM TABLE(read_csv('/etc/passwd'))
SELECT * FROM read_csv('/etc/passwd')
SELECT * FROM read_parquet('/etc/passwd')
SELECT * FROM '/etc/passwd'
DROP TABLE posts
DELETE FROM posts WHERE did = 'x'
INSERT INTO posts SELECT * FROM posts
UPDATE posts SET text = 'x'
CREATE TABLE t AS SELECT 1
CREATE VIEW v AS SELECT 1
COPY posts TO '/tmp/x.parquet'
COPY (SELECT 1) TO '/tmp/x.csv'
SET datafusion.execution.batch_size = 1
SELECT 1; DROP TABLE posts
WITH gone AS (DELETE FROM posts RETURNING *) SELECT * FROM gone
WITH x AS (INSERT INTO posts SELECT * FROM posts) SELECT 1
EXPLAIN DELETE FROM posts
SELECT * FROM posts WHERE did IN (SELECT did FROM follows WHERE subject = 'did:plc:x')
MERGE INTO posts USING likes ON true WHEN MATCHED THEN DELETE
PREPARE p AS SELECT 1
DESCRIBE posts
SHOW TABLES
SELECT 1+1+1+1+1+1+1+1+1+1 AS x
SELECT ((((((1))))))
