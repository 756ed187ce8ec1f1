-- 0008_cluster: several nodes on one database, one owner per instance.
--
-- The owner of an instance is the node named in its rows' node column (instances, devices,
-- calls, messages, push_tests, nonces): a DB reads only its own node's rows, so moving an
-- instance to another node is one transaction that rewrites that column. epoch grows by one on
-- every change of owner; every fenced state write names the epoch it was computed under, and a
-- write with a stale epoch changes nothing (a paused node that lost the instance cannot write
-- over the new owner's state).
--
-- An owner's hold on its instances is the lease of its nodes row (lease_until): one statement
-- renews the lease of every instance of the node. A node whose lease_until has passed is dead
-- and the survivors claim its instances. Times are UTC unix nanoseconds.
ALTER TABLE instances ADD COLUMN epoch INTEGER NOT NULL DEFAULT 1;

CREATE TABLE nodes (
    name         TEXT    PRIMARY KEY,
    -- host:port the node puts in its Contact: a survivor removes the dead node's binding there.
    address      TEXT    NOT NULL,
    -- base URL of the node's HTTP server (for the cluster section of /stats).
    http_url     TEXT    NOT NULL,
    -- 'live', 'draining' or 'dead'.
    state        TEXT    NOT NULL,
    -- random per process start: a second process with the same name cannot renew the lease.
    incarnation  TEXT    NOT NULL,
    started_at   INTEGER NOT NULL,
    heartbeat_at INTEGER NOT NULL,
    lease_until  INTEGER NOT NULL,
    -- instances held at the last renewal (spreading a dead node's share, least-loaded choice).
    instances    INTEGER NOT NULL DEFAULT 0,
    -- a dead node's instances not claimed yet (survivors stop scanning it at 0).
    unclaimed    INTEGER NOT NULL DEFAULT 0
);

-- Work for an owner that arrived at another node: a registration stored for it, an admin
-- action. The owner reads and deletes its rows (a periodic read, woken early by a notification
-- where the backend has one), so nothing is lost when it is slow or restarting.
CREATE TABLE cluster_inbox (
    id       INTEGER PRIMARY KEY,
    node     TEXT    NOT NULL,
    selector TEXT    NOT NULL,
    kind     TEXT    NOT NULL,
    arg      TEXT    NOT NULL DEFAULT '',
    at       INTEGER NOT NULL
);
CREATE INDEX cluster_inbox_node ON cluster_inbox (node, id);
