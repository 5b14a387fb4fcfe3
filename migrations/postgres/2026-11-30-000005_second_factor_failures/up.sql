-- Wrong second factors (email codes, authenticator codes, recovery codes)
-- have their own per-user counter: a correct password must not reset it,
-- only a completed second factor does (else password logins between rounds
-- of guesses would give an attacker unlimited tries).
ALTER TABLE users ADD COLUMN failed_second_factors INTEGER NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN failed_second_factors_since TIMESTAMP;
