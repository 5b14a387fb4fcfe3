ALTER TABLE sessions RESET (fillfactor);
ALTER TABLE otp_challenges RESET (fillfactor);
ALTER TABLE outbox RESET (fillfactor);
ALTER TABLE users RESET (fillfactor);
ALTER TABLE one_requests RESET (fillfactor);
ALTER TABLE totp_devices RESET (fillfactor);
