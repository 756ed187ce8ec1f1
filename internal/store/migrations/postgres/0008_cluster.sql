-- 0008_cluster: several nodes on one database, one owner per instance. See the SQLite
-- migration of the same name for the meaning of every column; this one is the same schema in
-- PostgreSQL's types.
--
-- Moving an instance rewrites the node column of the instance and of its devices, calls and
-- messages in one transaction; their foreign keys to instances (node, selector) are made
-- DEFERRABLE so that the check runs at commit, when parent and children agree again.
ALTER TABLE instances ADD COLUMN epoch BIGINT NOT NULL DEFAULT 1;

ALTER TABLE devices ALTER CONSTRAINT devices_node_selector_fkey DEFERRABLE INITIALLY IMMEDIATE;
ALTER TABLE calls ALTER CONSTRAINT calls_node_selector_fkey DEFERRABLE INITIALLY IMMEDIATE;
ALTER TABLE messages ALTER CONSTRAINT messages_node_selector_fkey DEFERRABLE INITIALLY IMMEDIATE;

CREATE TABLE nodes (
    name         TEXT    PRIMARY KEY,
    address      TEXT    NOT NULL,
    http_url     TEXT    NOT NULL,
    state        TEXT    NOT NULL,
    incarnation  TEXT    NOT NULL,
    started_at   BIGINT  NOT NULL,
    heartbeat_at BIGINT  NOT NULL,
    lease_until  BIGINT  NOT NULL,
    instances    BIGINT  NOT NULL DEFAULT 0,
    unclaimed    BIGINT  NOT NULL DEFAULT 0
);

CREATE TABLE cluster_inbox (
    id       BIGSERIAL PRIMARY KEY,
    node     TEXT    NOT NULL,
    selector TEXT    NOT NULL,
    kind     TEXT    NOT NULL,
    arg      TEXT    NOT NULL DEFAULT '',
    at       BIGINT  NOT NULL
);
CREATE INDEX cluster_inbox_node ON cluster_inbox (node, id);
