-- The outbox keeps the template variables and, for a mail that carries a
-- one-time code, that code sealed (ChaCha20-Poly1305 under a key derived
-- from the server secret, the row id as associated data). Bodies are
-- rendered when the mail is delivered: rows are small (the rendered bodies
-- were most of the bytes written per login code), and no code is stored in
-- the clear. The sealed code is erased once the row is sent or dead.
ALTER TABLE outbox ADD COLUMN sealed_code BLOB;
ALTER TABLE outbox DROP COLUMN body_text;
ALTER TABLE outbox DROP COLUMN body_html;
