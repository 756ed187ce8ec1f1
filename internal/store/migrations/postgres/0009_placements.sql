-- 0009_placements: where a new selector goes, decided once for the whole cluster. See the
-- SQLite migration of the same name for the meaning; this one is the same schema in
-- PostgreSQL's types.
CREATE TABLE placements (
    selector TEXT    PRIMARY KEY,
    node     TEXT    NOT NULL,
    at       BIGINT  NOT NULL
);
CREATE INDEX placements_at ON placements (at);
