DROP INDEX one_requests_waiting;
