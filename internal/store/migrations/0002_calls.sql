-- 0002_calls: incoming call records and waiting SIP MESSAGEs.
--
-- Both belong to an instance and go with it (ON DELETE CASCADE), so that forgetting a silent
-- instance also forgets who called it and what was written to it. Times are UTC unix nanoseconds
-- (0 = not yet / never). A message body is sealed at rest like the other secrets.

CREATE TABLE calls (
    id            INTEGER PRIMARY KEY,
    node          TEXT    NOT NULL,
    selector      TEXT    NOT NULL,
    pairing_id    TEXT    NOT NULL,
    call_id       TEXT    NOT NULL,
    caller_name   TEXT    NOT NULL,
    caller_uri    TEXT    NOT NULL,
    devices       TEXT    NOT NULL,
    dialog_state  TEXT    NOT NULL,
    outcome       TEXT    NOT NULL,
    reason        TEXT    NOT NULL,
    received_at   INTEGER NOT NULL,
    pushed_at     INTEGER NOT NULL,
    progress_at   INTEGER NOT NULL,
    answered_at   INTEGER NOT NULL,
    ended_at      INTEGER NOT NULL,
    UNIQUE (node, pairing_id),
    FOREIGN KEY (node, selector) REFERENCES instances (node, selector) ON DELETE CASCADE
);
CREATE INDEX calls_selector ON calls (node, selector, received_at);
CREATE INDEX calls_received ON calls (node, received_at);

CREATE TABLE messages (
    id            INTEGER PRIMARY KEY,
    node          TEXT    NOT NULL,
    selector      TEXT    NOT NULL,
    sender        TEXT    NOT NULL,
    content_type  TEXT    NOT NULL,
    body          BLOB    NOT NULL,
    size          INTEGER NOT NULL,
    call_id       TEXT    NOT NULL,
    received_at   INTEGER NOT NULL,
    FOREIGN KEY (node, selector) REFERENCES instances (node, selector) ON DELETE CASCADE
);
CREATE INDEX messages_selector ON messages (node, selector, id);
