DROP INDEX sessions_creator;
DROP INDEX sessions_user_agent_fingerprint_id;
ALTER TABLE sessions DROP COLUMN creator;
ALTER TABLE sessions DROP COLUMN user_agent_header;
ALTER TABLE sessions DROP COLUMN user_agent_fingerprint_id;
