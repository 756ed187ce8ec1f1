-- 0005_pbxhook: the PBX-hook mode (vialer-middleware-compatible API, internal/hook).
--
-- A PBX-hook device belongs to a SIP account (sip_user_id), not to an instance: the app registers
-- itself at the operator's PBX, and sipis only wakes it when the PBX asks. Several devices per
-- account are allowed; a device is one (sip_user_id, app, token). Push tokens are not secrets
-- of the kind sealed at rest (they only let someone push to the device through the app's own
-- push credentials), so they are stored as given, like the relay mode's tokens.
-- Times are UTC unix nanoseconds (0 = never).

CREATE TABLE pbx_devices (
    id                 INTEGER PRIMARY KEY,
    node               TEXT    NOT NULL,
    sip_user_id        TEXT    NOT NULL,
    platform           TEXT    NOT NULL,
    app                TEXT    NOT NULL,
    token              TEXT    NOT NULL,
    sandbox            INTEGER NOT NULL,
    name               TEXT    NOT NULL,
    os_version         TEXT    NOT NULL,
    client_version     TEXT    NOT NULL,
    remote_logging_id  TEXT    NOT NULL,
    token_invalid      INTEGER NOT NULL DEFAULT 0,
    created_at         INTEGER NOT NULL,
    last_seen          INTEGER NOT NULL,
    UNIQUE (node, sip_user_id, app, token)
);
CREATE INDEX pbx_devices_user ON pbx_devices (node, sip_user_id);

-- One record per incoming-call/ request. key_hash is the SHA-256 of the call's one-time
-- unique_key (the key itself is a bearer secret and is never stored), so hangup-reason/ and
-- log-metrics/ can name the call after the key was used.
CREATE TABLE pbx_calls (
    id             INTEGER PRIMARY KEY,
    node           TEXT    NOT NULL,
    key_hash       TEXT    NOT NULL,
    sip_user_id    TEXT    NOT NULL,
    call_id        TEXT    NOT NULL,
    caller_id      TEXT    NOT NULL,
    phonenumber    TEXT    NOT NULL,
    devices        INTEGER NOT NULL,
    pushes         INTEGER NOT NULL,
    outcome        TEXT    NOT NULL,
    reason         TEXT    NOT NULL,
    hangup_reason  TEXT    NOT NULL DEFAULT '',
    received_at    INTEGER NOT NULL,
    responded_at   INTEGER NOT NULL,
    ended_at       INTEGER NOT NULL,
    UNIQUE (node, key_hash)
);
CREATE INDEX pbx_calls_received ON pbx_calls (node, received_at);
CREATE INDEX pbx_calls_user ON pbx_calls (node, sip_user_id, received_at);

-- The app's call-setup metrics (log-metrics/), summarised on /stats.
CREATE TABLE pbx_metrics (
    id                INTEGER PRIMARY KEY,
    node              TEXT    NOT NULL,
    sip_user_id       TEXT    NOT NULL,
    os                TEXT    NOT NULL,
    app_version       TEXT    NOT NULL,
    network           TEXT    NOT NULL,
    direction         TEXT    NOT NULL,
    setup_result      TEXT    NOT NULL,
    failed_reason     TEXT    NOT NULL,
    first_response_ms INTEGER NOT NULL,
    received_at       INTEGER NOT NULL
);
CREATE INDEX pbx_metrics_received ON pbx_metrics (node, received_at);
