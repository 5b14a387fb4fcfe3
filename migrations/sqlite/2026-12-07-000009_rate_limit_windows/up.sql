-- The per-client rate limit, shared by every node on one PostgreSQL
-- database (a node on SQLite is alone and counts in memory): one row per
-- client (an IPv4 address or an IPv6 /64) with its current one-minute
-- window, counted by one upsert that locks the row.
CREATE TABLE rate_limit_windows (
    client TEXT PRIMARY KEY NOT NULL,
    window_minute BIGINT NOT NULL,
    count INTEGER NOT NULL
);
CREATE INDEX rate_limit_windows_minute ON rate_limit_windows (window_minute);
