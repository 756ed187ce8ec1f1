-- PostgreSQL form of migrations/0006_trends.sql: the same tables, columns and meaning, in PostgreSQL types
-- (BIGINT for INTEGER, BYTEA for BLOB, identity columns for INTEGER PRIMARY KEY). Keep both in step.
--
-- Per-minute samples of the /stats trend series and their change-of-state marks, kept for an
-- hour so that the charts survive a restart (the last 24 hours live in memory only).
CREATE TABLE trend_samples (
    node  TEXT NOT NULL,
    at    BIGINT  NOT NULL, -- Unix nanoseconds of the minute
    name  TEXT NOT NULL,
    gauge BIGINT  NOT NULL, -- 1: a level; 0: a count per minute
    value DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (node, at, name)
);
CREATE TABLE trend_marks (
    node TEXT NOT NULL,
    at   BIGINT  NOT NULL,
    text TEXT NOT NULL
);
CREATE INDEX trend_marks_at ON trend_marks (node, at);
