-- Rows changed several times in their life (a session: code sent,
-- verified, token rotated; a code: tried, used; a mail: leased, sent; a
-- user: failures counted) get room on their page, so PostgreSQL can update
-- them in place (a heap-only tuple) instead of writing a new version into
-- every index of the table. Applies to pages filled from now on.
ALTER TABLE sessions SET (fillfactor = 80);
ALTER TABLE otp_challenges SET (fillfactor = 80);
ALTER TABLE outbox SET (fillfactor = 80);
ALTER TABLE users SET (fillfactor = 80);
ALTER TABLE one_requests SET (fillfactor = 80);
ALTER TABLE totp_devices SET (fillfactor = 80);
