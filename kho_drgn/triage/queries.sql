-- The fleet report's groupings, over a table or view named `records` whose
-- columns are kho_drgn.triage.records.COLUMNS (the Parquet schema).
--
-- Every query below `crashes` is plain SQL (CASE, COALESCE, GROUP BY, UNION,
-- ORDER BY): DuckDB runs them here, SQLite runs them in the fallback, and
-- Spark SQL or Trino run them unchanged over the same Parquet files (see
-- README, "Fleet scale").  Ties are ordered by their text so every engine
-- gives the same order.  Each query starts with a `-- name:` line.

-- name: crashes
-- The analysed dumps with their kexec transition and kexec_count bucket.
SELECT
  dump, host, kexec_count, previous_release, current_release,
  COALESCE(panic_signature, '(no panic message)') AS panic_signature,
  crash_bucket, error_findings,
  -- From the chain, which reconciles the sources (a kho_in zeroed after boot
  -- reads as a cold boot; the chain follows the boot line and outgoing count),
  -- not from kho_status, which is what the KHO variables say.
  CASE
    WHEN kexec_count = 0
      THEN 'cold boot -> ' || COALESCE(NULLIF(current_release, ''), '?')
    WHEN COALESCE(previous_release, '') <> ''
      THEN previous_release || ' -> ' || COALESCE(NULLIF(current_release, ''), '?')
    ELSE '(' || COALESCE(kho_status, '?') || ') '
         || COALESCE(NULLIF(current_release, ''), '?')
  END AS transition,
  CASE
    WHEN kexec_count IS NULL THEN 'unknown'
    WHEN kexec_count < 0 THEN 'invalid (negative)'
    WHEN kexec_count = 0 THEN '0 (cold boot)'
    WHEN kexec_count = 1 THEN '1'
    WHEN kexec_count = 2 THEN '2'
    WHEN kexec_count <= 5 THEN '3-5'
    WHEN kexec_count <= 10 THEN '6-10'
    ELSE '>10'
  END AS kexec_bucket
FROM records
WHERE status = 'ok'

-- name: totals
SELECT COUNT(*) AS dumps,
       COALESCE(SUM(CASE WHEN status = 'ok' THEN 1 ELSE 0 END), 0) AS ok
FROM records

-- name: by_transition
SELECT transition, COUNT(*) AS crashes FROM crashes
GROUP BY transition ORDER BY crashes DESC, transition

-- name: by_kexec_count
SELECT kexec_bucket, COUNT(*) AS crashes FROM crashes
GROUP BY kexec_bucket ORDER BY crashes DESC, kexec_bucket

-- name: by_panic
SELECT panic_signature, COUNT(*) AS crashes FROM crashes
GROUP BY panic_signature ORDER BY crashes DESC, panic_signature

-- name: by_transition_and_panic
SELECT transition, panic_signature, COUNT(*) AS crashes FROM crashes
GROUP BY transition, panic_signature
ORDER BY crashes DESC, transition, panic_signature

-- name: by_crash_bucket
SELECT COALESCE(crash_bucket, '(no crash bucket)') AS bucket, COUNT(*) AS crashes
FROM crashes GROUP BY COALESCE(crash_bucket, '(no crash bucket)')
ORDER BY crashes DESC, bucket

-- name: by_transition_and_crash_bucket
SELECT transition, COALESCE(crash_bucket, '(no crash bucket)') AS bucket,
       COUNT(*) AS crashes
FROM crashes GROUP BY transition, COALESCE(crash_bucket, '(no crash bucket)')
ORDER BY crashes DESC, transition, bucket

-- name: by_error_findings
SELECT error_findings, COUNT(*) AS crashes FROM crashes
WHERE error_findings IS NOT NULL
GROUP BY error_findings ORDER BY crashes DESC, error_findings

-- name: by_transition_with_error_findings
SELECT transition, COUNT(*) AS crashes FROM crashes
WHERE error_findings IS NOT NULL
GROUP BY transition ORDER BY crashes DESC, transition

-- name: unknown_host
SELECT COUNT(*) AS crashes FROM crashes WHERE host IS NULL

-- name: host_dumps
SELECT host, COUNT(*) AS crashes FROM crashes WHERE host IS NOT NULL
GROUP BY host ORDER BY host

-- name: host_chain
-- Each dump names its kernel at kexec_count and the previous one before it.
SELECT DISTINCT host, chain_position, release FROM (
  SELECT host, kexec_count AS chain_position, current_release AS release
  FROM crashes
  WHERE host IS NOT NULL AND kexec_count >= 0 AND current_release IS NOT NULL
  UNION ALL
  SELECT host, kexec_count - 1 AS chain_position, previous_release AS release
  FROM crashes
  WHERE host IS NOT NULL AND kexec_count > 0 AND previous_release IS NOT NULL
) AS known
ORDER BY host, chain_position, release

-- name: host_crashes
SELECT host, kexec_count, previous_release, current_release, dump FROM crashes
WHERE host IS NOT NULL
ORDER BY host, CASE WHEN kexec_count IS NULL THEN 1 ELSE 0 END, kexec_count, dump

-- name: failed
SELECT dump, status, error FROM records WHERE status <> 'ok'
ORDER BY dump, status, COALESCE(error, '')

-- name: duckdb_flatten_jsonl
-- DuckDB only (the JSON Lines reader): the rows of `records` from the raw
-- columns of read_json (view `raw`: leaves are JSON, so their types are
-- checked here as kho_drgn.triage.records.flatten_record checks them).
-- DuckDB reads a non-object as an object of NULLs, so an object whose
-- always-present member (kho.status, chain.line, crash.live) is missing is
-- `dirty`, as are unreadable lines and rows without a string dump: the
-- Python reader reads such a file again and names its bad lines file:line.
WITH typed AS (
  SELECT
    filename,
    CASE WHEN json_type(j_status) = 'VARCHAR' THEN j_status ->> '$' END AS status,
    CASE WHEN json_type(j_dump) = 'VARCHAR' THEN j_dump ->> '$' END AS dump,
    CASE WHEN json_type(j_error) = 'VARCHAR' THEN j_error ->> '$' END AS error,
    json_type(j_host) AS host_type,
    CASE WHEN json_type(j_host) = 'VARCHAR' THEN j_host ->> '$' END AS host,
    CASE WHEN json_type(j_host_source) = 'VARCHAR'
      THEN j_host_source ->> '$' END AS host_source,
    CASE WHEN json_type(j_elapsed) IN ('BIGINT', 'UBIGINT', 'DOUBLE')
      THEN TRY_CAST(j_elapsed AS DOUBLE) END AS elapsed_s,
    CASE WHEN json_type(j_bucket.bucket) = 'VARCHAR'
      THEN j_bucket.bucket ->> '$' END AS crash_bucket,
    j_report.kho.status AS kho_status_j,
    j_report.chain AS chain,
    j_report.crash AS crash,
    j_report.findings AS findings,
    json_type(j_report.chain.kexec_count) AS count_type,
    json_type(j_report.chain.previous_release) AS previous_type,
    json_type(j_report.chain.current_release) AS current_type,
    json_type(j_report.crash.panic_reason) AS reason_type
  FROM raw
), checked AS (
  SELECT *,
    -- COALESCE: a NULL (a member that is missing) is a failed check
    status = 'ok' AND NOT COALESCE(
      COALESCE(host_type, 'NULL') IN ('NULL', 'VARCHAR')
      AND json_type(kho_status_j) = 'VARCHAR'
      AND chain.line IS NOT NULL
      AND (count_type IS NULL
           OR (count_type IN ('BIGINT', 'UBIGINT')
               AND TRY_CAST(chain.kexec_count AS HUGEINT)
                   BETWEEN -9223372036854775808 AND 9223372036854775807))
      AND COALESCE(previous_type, 'VARCHAR') = 'VARCHAR'
      AND COALESCE(current_type, 'VARCHAR') = 'VARCHAR'
      AND (crash IS NULL OR crash.live IS NOT NULL)
      AND COALESCE(reason_type, 'VARCHAR') = 'VARCHAR',
      false) AS malformed
  FROM typed
)
SELECT
  filename,
  COALESCE(status IS NULL OR malformed OR dump IS NULL, true) AS dirty,
  dump,
  CASE WHEN host NOT IN ('', '(none)', 'localhost', 'localhost.localdomain')
    THEN host END AS host,
  CASE WHEN host NOT IN ('', '(none)', 'localhost', 'localhost.localdomain')
    THEN host_source END AS host_source,
  status,
  error,
  CASE WHEN status = 'ok' THEN kho_status_j ->> '$' END AS kho_status,
  CASE WHEN status = 'ok' AND count_type IN ('BIGINT', 'UBIGINT')
    THEN TRY_CAST(chain.kexec_count AS BIGINT) END AS kexec_count,
  CASE WHEN status = 'ok' AND previous_type = 'VARCHAR'
    THEN chain.previous_release ->> '$' END AS previous_release,
  CASE WHEN status = 'ok' AND current_type = 'VARCHAR'
    THEN chain.current_release ->> '$' END AS current_release,
  CASE WHEN status = 'ok' AND json_type(chain.next.release) = 'VARCHAR'
    THEN chain.next.release ->> '$' END AS next_release,
  CASE WHEN status = 'ok' AND reason_type = 'VARCHAR'
    THEN crash.panic_reason ->> '$' END AS panic_reason,
  CASE WHEN status <> 'ok' THEN NULL
    WHEN reason_type IS DISTINCT FROM 'VARCHAR'
         OR crash.panic_reason ->> '$' = '' THEN '(no panic message)'
    ELSE COALESCE(NULLIF(
      trim(regexp_replace(crash.panic_reason ->> '$',
                          '0x[0-9a-fA-F]+|\b[0-9]+\b', 'N', 'g'),
           ' ' || chr(9) || chr(10) || chr(13) || chr(11) || chr(12)),
      ''), '(no panic message)')
  END AS panic_signature,
  crash_bucket,
  CASE WHEN status = 'ok' THEN
    nullif_empty_list(list_sort(list_distinct(list_transform(
      list_filter(findings,
                  lambda f: json_type(f.severity) = 'VARCHAR'
                       AND f.severity ->> '$' = 'error'
                       AND json_type(f.code) = 'VARCHAR'),
      -- report schema 1 codes by their schema 2 names (records.REPORT_1_CODES)
      lambda f: CASE f.code ->> '$'
        WHEN 'memmap.pointer-unaligned' THEN 'page.bad-pointer'
        WHEN 'memmap.pointer-out-of-range' THEN 'page.bad-pointer'
        WHEN 'memmap.cycle' THEN 'page.cycle'
        WHEN 'memmap.too-many-nodes' THEN 'page.too-many'
        WHEN 'subtree.bad-pointer' THEN 'page.bad-pointer'
        WHEN 'subtree.cycle' THEN 'page.cycle'
        WHEN 'luo.bad-pointer' THEN 'page.bad-pointer'
        WHEN 'luo.cycle' THEN 'page.cycle'
        ELSE f.code ->> '$' END))))
  END AS error_findings,
  elapsed_s,
  CASE WHEN status = 'ok' AND json_type(crash.build_id) = 'VARCHAR'
    THEN crash.build_id ->> '$' END AS build_id
FROM checked
