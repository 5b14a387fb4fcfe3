DROP TABLE one_request_sessions;
DROP TABLE one_requests;
ALTER TABLE sessions DROP COLUMN entity_field;
ALTER TABLE sessions DROP COLUMN entity_field_value;
ALTER TABLE sessions DROP COLUMN mobile_application_id;
ALTER TABLE sessions DROP COLUMN desktop_application_id;
ALTER TABLE sessions DROP COLUMN context;
