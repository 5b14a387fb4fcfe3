-- The waiting requests of a session in order: the claim finds each
-- session's first waiting request through it, one index probe per
-- candidate, whatever the planner's statistics say.
CREATE INDEX one_requests_waiting ON one_requests (session_id, sequence)
    WHERE status IN ('accepted', 'processing');
