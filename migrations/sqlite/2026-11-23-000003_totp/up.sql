-- One authenticator app per user. The secret is sealed with an AEAD key
-- derived from the server secret: the database alone does not reveal it.
CREATE TABLE totp_devices (
    user_id TEXT PRIMARY KEY NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    secret_nonce BLOB NOT NULL,
    secret_ciphertext BLOB NOT NULL,
    confirmed_at TIMESTAMP,
    -- The last accepted time step: that code, and older ones, are refused.
    last_used_step BIGINT,
    created_at TIMESTAMP NOT NULL
);

-- Single-use recovery codes, stored as HMACs; a new set replaces the old.
CREATE TABLE recovery_codes (
    id TEXT PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code_hmac BLOB NOT NULL,
    used_at TIMESTAMP,
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX recovery_codes_user_idx ON recovery_codes (user_id);
