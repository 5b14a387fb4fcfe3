-- The asynchronous face (seeds 000-002): each accepted request is a row,
-- processed by a worker on any node (claimed with a lease, FOR UPDATE SKIP
-- LOCKED on PostgreSQL, as the outbox), one session's requests in the
-- order they were accepted.
CREATE TABLE one_requests (
    id TEXT PRIMARY KEY NOT NULL,
    operation TEXT NOT NULL,
    session_id TEXT NOT NULL,
    -- The request's place among its session's requests (1, 2, …), taken
    -- from one_request_sessions in the accepting transaction: a session's
    -- requests are processed in this order, which is their commit order.
    sequence BIGINT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('accepted', 'processing', 'succeeded', 'failed')),
    -- The parsed body as JSON, without secrets.
    command TEXT NOT NULL,
    -- validate-login's password, sealed (ChaCha20-Poly1305, the row id as
    -- associated data); erased when the request finishes.
    sealed_secret BYTEA,
    -- Who asked: an admin token's subject, or 'anonymous'.
    caller TEXT NOT NULL,
    idempotency_key TEXT,
    -- HMAC-SHA256 of the body under the server secret (the body may hold
    -- a password: a plain hash could be guessed offline).
    body_digest BYTEA NOT NULL,
    client_ip TEXT,
    user_agent TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMP NOT NULL,
    lease_owner TEXT,
    lease_until TIMESTAMP,
    last_error TEXT,
    -- The outcome, JSON: result on success and on a failure the request
    -- could report (seed 002's response fields), error beside it.
    result TEXT,
    error TEXT,
    -- When the starter of a valid login took its session token (once).
    token_issued_at TIMESTAMP,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    finished_at TIMESTAMP
);
-- Idempotency-Key is scoped to the caller and the operation.
CREATE UNIQUE INDEX one_requests_idempotency ON one_requests (caller, operation, idempotency_key);
CREATE INDEX one_requests_due ON one_requests (status, next_attempt_at);
-- The claim's test "no earlier unfinished request of this session" reads
-- only this index (with status before sequence; with (session_id, sequence)
-- alone, PostgreSQL combined it with the status index under stale
-- statistics and a claim took 3 s at 10 000 waiting requests, 18 ms now).
CREATE INDEX one_requests_session ON one_requests (session_id, status, sequence);
-- Each session's last request number: the upsert that takes the next one
-- locks this row, so two requests of one session accepted at once are
-- numbered (and committed) one after the other.
CREATE TABLE one_request_sessions (
    session_id TEXT PRIMARY KEY NOT NULL,
    last_sequence BIGINT NOT NULL
);
CREATE INDEX one_requests_finished ON one_requests (finished_at);

-- What a trusted backend binds a session to (seed 001): a field of the
-- user's entity or application and its value, the applications by type,
-- and a free-form context object (JSON).
ALTER TABLE sessions ADD COLUMN entity_field TEXT;
ALTER TABLE sessions ADD COLUMN entity_field_value TEXT;
ALTER TABLE sessions ADD COLUMN mobile_application_id TEXT;
ALTER TABLE sessions ADD COLUMN desktop_application_id TEXT;
ALTER TABLE sessions ADD COLUMN context TEXT;
