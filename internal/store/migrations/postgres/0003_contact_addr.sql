-- PostgreSQL form of migrations/0003_contact_addr.sql: the same tables, columns and meaning, in PostgreSQL types
-- (BIGINT for INTEGER, BYTEA for BLOB, identity columns for INTEGER PRIMARY KEY). Keep both in step.
--
-- The host:port our Contact names when a NAT moved it (RFC 3581 received/rport); '' means
-- the user agent's own address. An unREGISTER after a restart must name the same Contact.
ALTER TABLE instances ADD COLUMN contact_addr TEXT NOT NULL DEFAULT '';
