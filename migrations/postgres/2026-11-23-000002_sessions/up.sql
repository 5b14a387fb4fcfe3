-- The session engine's tables, shared by every API face (PACE, ZITADEL v2,
-- the async calls and admin).
CREATE TABLE sessions (
    id TEXT PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    entity_id TEXT NOT NULL REFERENCES entities (id),
    application_id TEXT REFERENCES applications (id) ON DELETE SET NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'verified', 'failed', 'expired', 'revoked')),
    passed_login_otp BOOLEAN NOT NULL DEFAULT FALSE,
    password_verified_at TIMESTAMP,
    otp_email_verified_at TIMESTAMP,
    totp_verified_at TIMESTAMP,
    metadata TEXT NOT NULL DEFAULT '{}',
    user_agent_ip TEXT,
    user_agent_description TEXT,
    -- The jti of the one session token that is currently valid.
    token_id TEXT,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    expires_at TIMESTAMP NOT NULL,
    verified_at TIMESTAMP,
    failure_code TEXT,
    failure_reason TEXT,
    sequence BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX sessions_user_created_idx ON sessions (user_id, created_at);

CREATE TABLE otp_challenges (
    id TEXT PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    session_id TEXT REFERENCES sessions (id) ON DELETE CASCADE,
    purpose TEXT NOT NULL CHECK (purpose IN ('login', 'account')),
    -- HMAC-SHA256 of the code under the server secret; the code itself is never stored.
    code_hmac BYTEA NOT NULL,
    created_at TIMESTAMP NOT NULL,
    expires_at TIMESTAMP NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    consumed_at TIMESTAMP,
    burned_at TIMESTAMP
);
-- One live login challenge per session: a new code replaces the old row.
CREATE UNIQUE INDEX otp_challenges_session_purpose_key ON otp_challenges (session_id, purpose);
CREATE INDEX otp_challenges_user_idx ON otp_challenges (user_id, purpose);

CREATE TABLE outbox (
    id TEXT PRIMARY KEY NOT NULL,
    kind TEXT NOT NULL,
    language TEXT NOT NULL,
    recipient TEXT NOT NULL,
    subject TEXT NOT NULL,
    -- Rendered bodies (they may hold a one-time code): set to NULL once the
    -- row is sent or dead.
    body_text TEXT,
    body_html TEXT,
    -- The template variables without secrets, to render a notice again.
    context TEXT NOT NULL DEFAULT '{}',
    message_id TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL CHECK (status IN ('pending', 'sent', 'dead')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMP NOT NULL,
    -- A worker's claim: another worker takes the row only after lease_until.
    lease_owner TEXT,
    lease_until TIMESTAMP,
    last_error TEXT,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    sent_at TIMESTAMP
);
CREATE INDEX outbox_due_idx ON outbox (status, next_attempt_at);

CREATE TABLE audit_events (
    id TEXT PRIMARY KEY NOT NULL,
    occurred_at TIMESTAMP NOT NULL,
    kind TEXT NOT NULL,
    outcome TEXT NOT NULL,
    user_id TEXT,
    session_id TEXT,
    ip TEXT,
    detail TEXT
);
CREATE INDEX audit_events_user_idx ON audit_events (user_id, occurred_at);
CREATE INDEX audit_events_kind_idx ON audit_events (kind, occurred_at);
