-- The v2 face stores the user agent a client reports (ZITADEL's
-- UserAgent: a fingerprint and the headers, besides ip and description)
-- and who created the session, so both can be searched.
ALTER TABLE sessions ADD COLUMN user_agent_fingerprint_id TEXT;
-- JSON object of header name -> list of values, as the client sent it.
ALTER TABLE sessions ADD COLUMN user_agent_header TEXT;
-- The admin token's subject, or the user's id for a login.
ALTER TABLE sessions ADD COLUMN creator TEXT;
CREATE INDEX sessions_user_agent_fingerprint_id ON sessions (user_agent_fingerprint_id);
CREATE INDEX sessions_creator ON sessions (creator);
