-- 0007_call_outcomes: the call outcomes on /stats, the summary and /metrics are counted from
-- the call records (CallOutcomes) on every view; this index lets SQLite count them from the
-- index alone, and find the records a killed run left open (CloseOpenCalls) without a scan
-- of the table.
CREATE INDEX calls_outcome ON calls (node, outcome, reason, dialog_state);
