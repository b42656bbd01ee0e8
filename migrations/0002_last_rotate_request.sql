-- The rotate-now request (the VaultSecret's `vault.hyperiondb.io/rotate-now` nonce) that the
-- secret's latest rotation answered, as the lowercase hex SHA-256 of the nonce (any length fits),
-- written in the same transaction as that rotation's version. The controller decides from it
-- whether a pending nonce was already served (a crash between the rotation's commit and the status
-- write that acknowledges the nonce must not rotate twice), instead of from status.currentVersion
-- being behind the database, which is also the case after an API rotate or PUT and then answered a
-- later nonce with a version older than the request.
ALTER TABLE vault.secrets ADD COLUMN last_rotate_request text;
ALTER TABLE vault.secrets ADD CONSTRAINT secrets_last_rotate_request_sha256
    CHECK (last_rotate_request ~ '^[0-9a-f]{64}$');
