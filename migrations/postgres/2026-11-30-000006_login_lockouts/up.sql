-- Password failures per user and client source (an IPv4 address or an
-- IPv6 /64): ten wrong passwords from one source lock that source out of
-- the account, not the account's owner elsewhere. The user row keeps the
-- count over all sources, whose much higher threshold locks the account
-- for everyone (it bounds guessing spread over many addresses).
CREATE TABLE login_lockouts (
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    source TEXT NOT NULL,
    failed INTEGER NOT NULL DEFAULT 0,
    failed_since TIMESTAMP,
    locked_until TIMESTAMP,
    PRIMARY KEY (user_id, source)
);
