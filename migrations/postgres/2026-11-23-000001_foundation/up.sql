-- Ids are uuids stored as TEXT and times are UTC timestamps bound from Rust,
-- so the same diesel queries run unchanged on SQLite and PostgreSQL.
CREATE TABLE entities (
    id TEXT PRIMARY KEY NOT NULL,
    entity_number TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);

CREATE TABLE applications (
    id TEXT PRIMARY KEY NOT NULL,
    entity_id TEXT NOT NULL REFERENCES entities (id),
    application_name TEXT NOT NULL,
    application_type TEXT NOT NULL CHECK (application_type IN ('mobile', 'desktop', 'web')),
    application_number TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    CONSTRAINT applications_entity_id_application_name_key UNIQUE (entity_id, application_name)
);

CREATE TABLE users (
    id TEXT PRIMARY KEY NOT NULL,
    entity_id TEXT NOT NULL REFERENCES entities (id),
    employee_number TEXT NOT NULL,
    login_name TEXT NOT NULL UNIQUE,
    email TEXT,
    display_name TEXT NOT NULL,
    preferred_language TEXT NOT NULL DEFAULT 'en' CHECK (preferred_language IN ('en', 'de')),
    password_hash TEXT,
    pin_hash TEXT,
    -- Failed password/PIN checks in the current window, and the lock they caused.
    failed_logins INTEGER NOT NULL DEFAULT 0,
    failed_logins_since TIMESTAMP,
    locked_until TIMESTAMP,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    CONSTRAINT users_entity_id_employee_number_key UNIQUE (entity_id, employee_number)
);

CREATE TABLE signing_keys (
    kid TEXT PRIMARY KEY NOT NULL,
    algorithm TEXT NOT NULL,
    private_key BYTEA NOT NULL,
    public_key BYTEA NOT NULL,
    created_at TIMESTAMP NOT NULL
);

-- Secrets every instance must share (the OTP HMAC key), made at first start
-- unless LATCHKEY_SECRET is set.
CREATE TABLE server_secrets (
    name TEXT PRIMARY KEY NOT NULL,
    value BYTEA NOT NULL,
    created_at TIMESTAMP NOT NULL
);
