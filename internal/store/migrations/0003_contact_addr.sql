-- The host:port our Contact names when a NAT moved it (RFC 3581 received/rport); '' means
-- the user agent's own address. An unREGISTER after a restart must name the same Contact.
ALTER TABLE instances ADD COLUMN contact_addr TEXT NOT NULL DEFAULT '';
