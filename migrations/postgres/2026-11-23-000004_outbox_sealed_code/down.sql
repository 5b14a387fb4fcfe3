ALTER TABLE outbox ADD COLUMN body_text TEXT;
ALTER TABLE outbox ADD COLUMN body_html TEXT;
ALTER TABLE outbox DROP COLUMN sealed_code;
