-- PostgreSQL form of migrations/0004_alert_token.sql: the same tables, columns and meaning, in PostgreSQL types
-- (BIGINT for INTEGER, BYTEA for BLOB, identity columns for INTEGER PRIMARY KEY). Keep both in step.
--
-- An iOS device has two APNs tokens, each valid for one topic only: push_token is the PushKit
-- (VoIP) token calls go to (topic <appId>.voip), alert_token the remote-notification token that
-- messages, missed calls and notices go to (topic <appId>). Rows from before this migration
-- have the VoIP token in push_token and no alert token. Each token is invalidated on its own.
ALTER TABLE devices ADD COLUMN alert_token TEXT NOT NULL DEFAULT '';
ALTER TABLE devices ADD COLUMN alert_token_invalid BIGINT  NOT NULL DEFAULT 0;
