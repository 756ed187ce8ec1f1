-- 0009_placements: where a new selector goes, decided once for the whole cluster.
--
-- A registration for a selector no node holds yet may be posted to two nodes at the same
-- instant. Each node places it (PlaceNew) by inserting the selector's row here; the primary key
-- lets exactly one insert win, and the other node reads the winner's choice, so both
-- registrations reach the same node, whose manager creates the instance once. A row is only
-- needed until the instance exists (then its owner is known); rows older than a minute are
-- replaced or deleted. Times are UTC unix nanoseconds.
CREATE TABLE placements (
    selector TEXT    PRIMARY KEY,
    node     TEXT    NOT NULL,
    at       INTEGER NOT NULL
);
CREATE INDEX placements_at ON placements (at);
