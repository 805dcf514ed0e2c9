-- Users log in with passwords; tokens are listed per user; roles are looked up per project.
--
-- password_hash is an argon2id hash in the PHC string format ($argon2id$v=19$...), or NULL
-- for a user who can only use tokens (the bootstrap admin, automation).

ALTER TABLE users ADD COLUMN password_hash TEXT;

CREATE INDEX tokens_user ON tokens (user_id);
CREATE INDEX role_bindings_scope ON role_bindings (scope, user_id);
