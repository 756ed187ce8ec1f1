-- 0001_init: the first schema of sipis.
--
-- Every row that belongs to a node carries the node's name (Settings.xml <Server Name>), so that
-- several nodes can later share one database. Times are UTC unix nanoseconds (0 = no time).
-- Secrets (SIP password, device secret) are stored sealed with XChaCha20-Poly1305 as
-- nonce || ciphertext; they are never written in plain text.

CREATE TABLE instances (
    id            INTEGER PRIMARY KEY,
    node          TEXT    NOT NULL,
    selector      TEXT    NOT NULL,
    user_name     TEXT    NOT NULL,
    auth_user     TEXT    NOT NULL,
    password      BLOB    NOT NULL,
    domain        TEXT    NOT NULL,
    proxy         TEXT    NOT NULL,
    port          INTEGER NOT NULL,
    transport     TEXT    NOT NULL,
    expires       INTEGER NOT NULL,
    display_name  TEXT    NOT NULL,
    mode          TEXT    NOT NULL,
    off           INTEGER NOT NULL DEFAULT 0,
    state         TEXT    NOT NULL,
    status        TEXT    NOT NULL,
    last_error    TEXT    NOT NULL DEFAULT '',
    contact_user  TEXT    NOT NULL,
    call_id       TEXT    NOT NULL,
    cseq          INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    settings      BLOB,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    last_activity INTEGER NOT NULL,
    UNIQUE (node, selector)
);

-- The Contact user part maps an incoming request back to its instance; it is random and unique
-- over all nodes.
CREATE UNIQUE INDEX instances_contact_user ON instances (contact_user);
CREATE INDEX instances_last_activity ON instances (node, last_activity);

CREATE TABLE devices (
    node          TEXT    NOT NULL,
    selector      TEXT    NOT NULL,
    device_id     TEXT    NOT NULL,
    platform      TEXT    NOT NULL,
    push_token    TEXT    NOT NULL,
    app_id        TEXT    NOT NULL,
    sandbox       INTEGER NOT NULL,
    app_version   TEXT    NOT NULL,
    locale        TEXT    NOT NULL,
    secret        BLOB    NOT NULL,
    token_invalid INTEGER NOT NULL DEFAULT 0,
    last_seen     INTEGER NOT NULL,
    PRIMARY KEY (node, selector, device_id),
    FOREIGN KEY (node, selector) REFERENCES instances (node, selector) ON DELETE CASCADE
);

-- Registration nonces already used, per selector. They deliberately outlive their instance (no
-- foreign key): a replayed "background" registration must stay refused after "off" deleted the
-- instance, until PruneNonces drops nonces older than the freshness window.
CREATE TABLE nonces (
    node     TEXT    NOT NULL,
    selector TEXT    NOT NULL,
    nonce    TEXT    NOT NULL,
    seen_at  INTEGER NOT NULL,
    PRIMARY KEY (node, selector, nonce)
) WITHOUT ROWID;
CREATE INDEX nonces_seen_at ON nonces (node, seen_at);

CREATE TABLE push_tests (
    id        INTEGER PRIMARY KEY,
    node      TEXT    NOT NULL,
    selector  TEXT    NOT NULL,
    device_id TEXT    NOT NULL,
    platform  TEXT    NOT NULL,
    outcome   TEXT    NOT NULL,
    reason    TEXT    NOT NULL,
    at        INTEGER NOT NULL
);
CREATE INDEX push_tests_selector ON push_tests (node, selector);

CREATE TABLE probe_events (
    id         INTEGER PRIMARY KEY,
    node       TEXT    NOT NULL,
    target     TEXT    NOT NULL,
    old_state  TEXT    NOT NULL,
    new_state  TEXT    NOT NULL,
    code       INTEGER NOT NULL,
    rtt_ns     INTEGER NOT NULL,
    last_error TEXT    NOT NULL,
    at         INTEGER NOT NULL
);
CREATE INDEX probe_events_target ON probe_events (node, target, at);

-- One sealed known value per node: Open checks it so that a wrong data key fails at start with
-- ErrDataKey instead of at the first read of a password.
CREATE TABLE key_check (
    node   TEXT PRIMARY KEY,
    sealed BLOB NOT NULL
);
