DROP TABLE audit_events;
DROP TABLE outbox;
DROP TABLE otp_challenges;
DROP TABLE sessions;
