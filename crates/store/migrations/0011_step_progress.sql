-- What a running step last reported it observes (a wait says what it waits for and what
-- it sees), when it said so, and when the step's first attempt started: a wait's
-- deadline counts from there, across retries and resumes after a crash. Only columns
-- added, so a release that doesn't know them keeps working on this schema. Times are unix ms.
ALTER TABLE operation_steps ADD COLUMN progress TEXT;
ALTER TABLE operation_steps ADD COLUMN progress_at BIGINT;
ALTER TABLE operation_steps ADD COLUMN first_started_at BIGINT;
