-- PostgreSQL form of migrations/0007_call_outcomes.sql: the same tables, columns and meaning, in PostgreSQL types
-- (BIGINT for INTEGER, BYTEA for BLOB, identity columns for INTEGER PRIMARY KEY). Keep both in step.
--
-- 0007_call_outcomes: the call outcomes on /stats, the summary and /metrics are counted from
-- the call records (CallOutcomes) on every view; this index lets PostgreSQL count them from the
-- index alone, and find the records a killed run left open (CloseOpenCalls) without a scan
-- of the table.
CREATE INDEX calls_outcome ON calls (node, outcome, reason, dialog_state);
