-- hyperion-vault schema, version 1 (DESIGN.md §4–§6).
-- Applied by the store's migration runner inside pg_advisory_lock, in one transaction.
-- Never edit an applied file: the runner refuses to start when a checksum changes. Add 0002_….sql.

CREATE SCHEMA IF NOT EXISTS vault;
REVOKE ALL ON SCHEMA vault FROM PUBLIC;

-- ---------------------------------------------------------------------------------------------
-- Secrets and versions
-- ---------------------------------------------------------------------------------------------

CREATE TABLE vault.secrets (
    id                      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name                    text        NOT NULL,
    kind                    text        NOT NULL,
    owner_kind              text        NOT NULL,
    owner_uid               text,
    owner_namespace         text,
    owner_name              text,
    description             text,
    rotation_interval_secs  bigint,
    grace_period_secs       bigint      NOT NULL DEFAULT 0,
    generator_length        integer,
    generator_charset       text,
    current_version         integer     NOT NULL DEFAULT 0,
    next_rotation_at        timestamptz,
    created_at              timestamptz NOT NULL,
    updated_at              timestamptz NOT NULL,
    deleted_at              timestamptz,

    -- DESIGN.md §7 name rules (the same as core::name::SecretName).
    CONSTRAINT secrets_name_length CHECK (char_length(name) BETWEEN 1 AND 253),
    CONSTRAINT secrets_name_chars CHECK (name ~ '^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$'),
    CONSTRAINT secrets_name_no_dot_segments CHECK (name !~ '(^|/)\.\.?(/|$)'),
    CONSTRAINT secrets_name_reserved_suffix CHECK (name !~ '(^|/)(verify|rotate|versions)$'),
    CONSTRAINT secrets_kind CHECK (kind IN ('manual', 'automatic')),
    CONSTRAINT secrets_owner CHECK (
        (owner_kind = 'api' AND owner_uid IS NULL AND owner_namespace IS NULL AND owner_name IS NULL)
        OR (owner_kind = 'resource' AND owner_uid <> '' AND owner_namespace <> '' AND owner_name <> '')
    ),
    CONSTRAINT secrets_owner_resource_name CHECK (owner_kind <> 'resource' OR name = owner_namespace || '/' || owner_name),
    CONSTRAINT secrets_description_length CHECK (char_length(description) <= 1024),
    CONSTRAINT secrets_rotation_interval_positive CHECK (rotation_interval_secs > 0),
    CONSTRAINT secrets_grace_nonnegative CHECK (grace_period_secs >= 0),
    CONSTRAINT secrets_generator_length CHECK (generator_length BETWEEN 16 AND 4096),
    CONSTRAINT secrets_generator_charset CHECK (generator_charset IN ('alphanumeric', 'base64url', 'hex', 'ascii-printable')),
    CONSTRAINT secrets_generator_complete CHECK ((generator_length IS NULL) = (generator_charset IS NULL)),
    CONSTRAINT secrets_current_version_nonnegative CHECK (current_version >= 0),
    -- Automatic: interval + generator; while live, a value and a scheduled rotation.
    -- Manual: no schedule, no generator.
    CONSTRAINT secrets_kind_columns CHECK (
        (kind = 'automatic'
            AND rotation_interval_secs IS NOT NULL
            AND generator_length IS NOT NULL
            AND (deleted_at IS NOT NULL OR (current_version >= 1 AND next_rotation_at IS NOT NULL)))
        OR (kind = 'manual'
            AND rotation_interval_secs IS NULL
            AND next_rotation_at IS NULL
            AND generator_length IS NULL)
    ),
    CONSTRAINT secrets_deleted_unscheduled CHECK (deleted_at IS NULL OR next_rotation_at IS NULL),
    CONSTRAINT secrets_timestamps CHECK (updated_at >= created_at AND (deleted_at IS NULL OR deleted_at >= created_at))
);

-- A deleted secret keeps its row (history, audit) but frees its name and owner at once.
CREATE UNIQUE INDEX secrets_live_name ON vault.secrets (name) WHERE deleted_at IS NULL;
CREATE UNIQUE INDEX secrets_live_owner_uid ON vault.secrets (owner_uid) WHERE deleted_at IS NULL AND owner_uid IS NOT NULL;
CREATE INDEX secrets_due ON vault.secrets (next_rotation_at) WHERE deleted_at IS NULL AND next_rotation_at IS NOT NULL;

CREATE TABLE vault.secret_versions (
    secret_id       bigint      NOT NULL REFERENCES vault.secrets (id),
    version         integer     NOT NULL,
    kms_key_id      text        NOT NULL,
    wrapped_dek     bytea,
    nonce           bytea,
    ciphertext      bytea,
    created_at      timestamptz NOT NULL,
    superseded_at   timestamptz,
    expires_at      timestamptz,
    shredded_at     timestamptz,
    PRIMARY KEY (secret_id, version),

    CONSTRAINT versions_version_positive CHECK (version >= 1),
    CONSTRAINT versions_key_id_length CHECK (char_length(kms_key_id) BETWEEN 1 AND 2048),
    CONSTRAINT versions_wrapped_dek_nonempty CHECK (octet_length(wrapped_dek) BETWEEN 1 AND 6144),
    CONSTRAINT versions_nonce_length CHECK (octet_length(nonce) = 24),
    -- Ciphertext carries the 16-byte Poly1305 tag; values are at most 64 KiB.
    CONSTRAINT versions_ciphertext_length CHECK (octet_length(ciphertext) BETWEEN 16 AND 65536 + 16),
    CONSTRAINT versions_crypto_all_or_nothing CHECK (
        (wrapped_dek IS NULL AND nonce IS NULL AND ciphertext IS NULL)
        OR (wrapped_dek IS NOT NULL AND nonce IS NOT NULL AND ciphertext IS NOT NULL)
    ),
    CONSTRAINT versions_shredded_iff_no_crypto CHECK ((shredded_at IS NULL) = (ciphertext IS NOT NULL)),
    CONSTRAINT versions_superseded_has_expiry CHECK ((superseded_at IS NULL) = (expires_at IS NULL)),
    CONSTRAINT versions_timestamps CHECK (
        (superseded_at IS NULL OR superseded_at >= created_at)
        AND (expires_at IS NULL OR expires_at >= superseded_at)
        AND (shredded_at IS NULL OR shredded_at >= created_at)
    )
);

CREATE INDEX versions_pending_expiry ON vault.secret_versions (expires_at) WHERE shredded_at IS NULL AND expires_at IS NOT NULL;

-- Versions are append-only except for supersession and crypto-shredding: identity and key
-- material can never be changed or restored, only destroyed.
CREATE FUNCTION vault.secret_versions_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.secret_id <> OLD.secret_id OR NEW.version <> OLD.version OR NEW.created_at <> OLD.created_at
       OR NEW.kms_key_id IS DISTINCT FROM OLD.kms_key_id AND NEW.ciphertext IS NULL THEN
        RAISE EXCEPTION 'secret version identity is immutable' USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    IF OLD.ciphertext IS NULL AND NEW.ciphertext IS NOT NULL THEN
        RAISE EXCEPTION 'a shredded secret version cannot be restored' USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    IF NEW.ciphertext IS NOT NULL AND (NEW.ciphertext <> OLD.ciphertext OR NEW.nonce <> OLD.nonce) THEN
        RAISE EXCEPTION 'sealed values are immutable' USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    IF OLD.superseded_at IS NOT NULL AND NEW.superseded_at IS DISTINCT FROM OLD.superseded_at THEN
        RAISE EXCEPTION 'supersession time is immutable' USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER secret_versions_guard BEFORE UPDATE ON vault.secret_versions
    FOR EACH ROW EXECUTE FUNCTION vault.secret_versions_guard();

-- ---------------------------------------------------------------------------------------------
-- Management authentication: roles, tokens, lockouts
-- ---------------------------------------------------------------------------------------------

CREATE TABLE vault.roles (
    name        text        PRIMARY KEY,
    description text,
    is_admin    boolean     NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    CONSTRAINT roles_name CHECK (name ~ '^[A-Za-z0-9._-]{1,64}$'),
    CONSTRAINT roles_description_length CHECK (char_length(description) <= 1024),
    CONSTRAINT roles_timestamps CHECK (updated_at >= created_at)
);

CREATE TABLE vault.role_permissions (
    role_name   text    NOT NULL REFERENCES vault.roles (name) ON DELETE CASCADE,
    position    integer NOT NULL,
    action      text    NOT NULL,
    path        text    NOT NULL,
    PRIMARY KEY (role_name, position),
    CONSTRAINT role_permissions_position CHECK (position >= 0 AND position < 1000),
    CONSTRAINT role_permissions_action CHECK (action IN ('create', 'update', 'delete', 'rotate', 'read-metadata', '*')),
    -- An exact name, or a prefix ending in a single trailing '*' ('*' alone matches everything).
    CONSTRAINT role_permissions_path CHECK (
        char_length(path) BETWEEN 1 AND 254
        AND path ~ '^([A-Za-z0-9._-][A-Za-z0-9._/-]*)?\*?$'
        AND path !~ '//'
    )
);

CREATE TABLE vault.admin_tokens (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text        NOT NULL,
    fingerprint bytea       NOT NULL UNIQUE,
    role_name   text        NOT NULL REFERENCES vault.roles (name),
    created_at  timestamptz NOT NULL,
    expires_at  timestamptz,
    revoked_at  timestamptz,
    CONSTRAINT admin_tokens_name CHECK (name ~ '^[A-Za-z0-9._-]{1,64}$'),
    -- SHA-256 of the token; the token itself is never stored.
    CONSTRAINT admin_tokens_fingerprint_length CHECK (octet_length(fingerprint) = 32),
    CONSTRAINT admin_tokens_expiry CHECK (expires_at > created_at),
    CONSTRAINT admin_tokens_revocation CHECK (revoked_at >= created_at)
);

-- A revoked token's name may be reused.
CREATE UNIQUE INDEX admin_tokens_active_name ON vault.admin_tokens (name) WHERE revoked_at IS NULL;

CREATE TABLE vault.auth_lockouts (
    client_key          text        PRIMARY KEY,
    failures            integer     NOT NULL,
    window_started_at   timestamptz NOT NULL,
    locked_until        timestamptz,
    CONSTRAINT auth_lockouts_key_length CHECK (char_length(client_key) BETWEEN 1 AND 256),
    CONSTRAINT auth_lockouts_failures CHECK (failures >= 0)
);

-- ---------------------------------------------------------------------------------------------
-- Audit log: append-only for the service role, hash-chained
-- ---------------------------------------------------------------------------------------------

CREATE TABLE vault.audit_log (
    -- Assigned by the chain trigger under the chain-head lock, so id order is chain order.
    id          bigint      PRIMARY KEY,
    at          timestamptz NOT NULL,
    actor       text        NOT NULL,
    client_ip   inet,
    action      text        NOT NULL,
    secret      text,
    outcome     text        NOT NULL,
    detail      text,
    prev_hash   bytea       NOT NULL,
    row_hash    bytea       NOT NULL,
    CONSTRAINT audit_actor_length CHECK (char_length(actor) BETWEEN 1 AND 256),
    CONSTRAINT audit_action CHECK (action ~ '^[a-z][a-z0-9_.-]{0,63}$'),
    CONSTRAINT audit_secret_length CHECK (char_length(secret) BETWEEN 1 AND 253),
    CONSTRAINT audit_outcome CHECK (outcome IN ('success', 'denied', 'not_found', 'invalid', 'conflict', 'locked_out', 'unavailable', 'error')),
    CONSTRAINT audit_detail_length CHECK (char_length(detail) <= 1024),
    CONSTRAINT audit_prev_hash_length CHECK (octet_length(prev_hash) = 32),
    CONSTRAINT audit_row_hash_length CHECK (octet_length(row_hash) = 32)
);

CREATE SEQUENCE vault.audit_log_id_seq AS bigint OWNED BY vault.audit_log.id;

-- The head of the chain: one row, locked by every insert.
CREATE TABLE vault.audit_chain_head (
    singleton   boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    last_id     bigint,
    last_hash   bytea   NOT NULL CHECK (octet_length(last_hash) = 32)
);
INSERT INTO vault.audit_chain_head (singleton, last_id, last_hash) VALUES (true, NULL, '\x0000000000000000000000000000000000000000000000000000000000000000');

-- sha256(prev_hash || canonical content); every field length-prefixed so no two rows encode alike.
CREATE FUNCTION vault.audit_row_hash(
    prev bytea, id bigint, at timestamptz, actor text, client_ip inet, action text, secret text, outcome text, detail text
) RETURNS bytea
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT sha256(prev || convert_to(
        concat_ws('|',
            id::text,
            -- Microseconds since the epoch: independent of TimeZone and DateStyle.
            (EXTRACT(EPOCH FROM at) * 1000000)::numeric(30, 0)::text,
            char_length(actor)::text || ':' || actor,
            coalesce(char_length(host(client_ip) || '/' || masklen(client_ip))::text || ':' || host(client_ip) || '/' || masklen(client_ip), '-'),
            char_length(action)::text || ':' || action,
            coalesce(char_length(secret)::text || ':' || secret, '-'),
            char_length(outcome)::text || ':' || outcome,
            coalesce(char_length(detail)::text || ':' || detail, '-')
        ), 'UTF8'))
$$;

CREATE FUNCTION vault.audit_log_chain() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    head_hash bytea;
BEGIN
    -- The row lock serialises concurrent appends until commit, so ids are issued in chain order.
    SELECT last_hash INTO STRICT head_hash FROM vault.audit_chain_head WHERE singleton FOR UPDATE;
    NEW.id := nextval('vault.audit_log_id_seq');
    NEW.prev_hash := head_hash;
    NEW.row_hash := vault.audit_row_hash(head_hash, NEW.id, NEW.at, NEW.actor, NEW.client_ip, NEW.action, NEW.secret, NEW.outcome, NEW.detail);
    UPDATE vault.audit_chain_head SET last_id = NEW.id, last_hash = NEW.row_hash WHERE singleton;
    RETURN NEW;
END $$;

CREATE TRIGGER audit_log_chain BEFORE INSERT ON vault.audit_log
    FOR EACH ROW EXECUTE FUNCTION vault.audit_log_chain();

-- Defence in depth: even a role with UPDATE/DELETE cannot edit the log without disabling the
-- trigger (which only the owner or a superuser can do, and the chain check still catches it).
CREATE FUNCTION vault.audit_log_immutable() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'vault.audit_log is append-only' USING ERRCODE = 'insufficient_privilege';
END $$;

CREATE TRIGGER audit_log_immutable BEFORE UPDATE OR DELETE ON vault.audit_log
    FOR EACH ROW EXECUTE FUNCTION vault.audit_log_immutable();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON vault.audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION vault.audit_log_immutable();

-- The id of the first row whose hash or link is wrong, or whose removal broke the link to the
-- chain head; NULL when the whole chain verifies.
CREATE FUNCTION vault.verify_audit_chain() RETURNS bigint
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r record;
    expected bytea := '\x0000000000000000000000000000000000000000000000000000000000000000';
    last bigint;
    head record;
BEGIN
    FOR r IN SELECT * FROM vault.audit_log ORDER BY id LOOP
        IF r.prev_hash <> expected
           OR r.row_hash <> vault.audit_row_hash(r.prev_hash, r.id, r.at, r.actor, r.client_ip, r.action, r.secret, r.outcome, r.detail) THEN
            RETURN r.id;
        END IF;
        expected := r.row_hash;
        last := r.id;
    END LOOP;
    SELECT * INTO STRICT head FROM vault.audit_chain_head WHERE singleton;
    IF head.last_hash <> expected OR head.last_id IS DISTINCT FROM last THEN
        -- Rows were removed from the end: report the first id that should exist.
        RETURN coalesce(last, 0) + 1;
    END IF;
    RETURN NULL;
END $$;

-- ---------------------------------------------------------------------------------------------
-- Migrations bookkeeping (created by the runner before this file; declared here for completeness)
-- ---------------------------------------------------------------------------------------------

CREATE TABLE IF NOT EXISTS vault.schema_migrations (
    name        text        PRIMARY KEY,
    checksum    bytea       NOT NULL CHECK (octet_length(checksum) = 32),
    applied_at  timestamptz NOT NULL DEFAULT now()
);

-- ---------------------------------------------------------------------------------------------
-- Least privilege: nothing for PUBLIC, RLS forced everywhere, policies only for granted roles
-- ---------------------------------------------------------------------------------------------

REVOKE ALL ON ALL TABLES IN SCHEMA vault FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA vault FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA vault FROM PUBLIC;

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['secrets', 'secret_versions', 'roles', 'role_permissions', 'admin_tokens',
                             'auth_lockouts', 'audit_log', 'audit_chain_head', 'schema_migrations'] LOOP
        EXECUTE format('ALTER TABLE vault.%I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE vault.%I FORCE ROW LEVEL SECURITY', t);
        -- The owner (the role applying migrations) keeps full access to its own tables; forced RLS
        -- would otherwise hide the rows from it too. Superusers bypass RLS anyway.
        EXECUTE format('CREATE POLICY owner_all ON vault.%I TO %I USING (true) WITH CHECK (true)', t, current_user);
    END LOOP;
END $$;

-- Grants a login role exactly what the controller and the API need, with RLS policies scoped to
-- that role. Run once per role on the primary, as the schema owner or a superuser.
CREATE FUNCTION vault.grant_service_role(role_name name) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t text;
    policy text := 'svc_' || role_name;
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA vault TO %I', role_name);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE ON vault.secrets, vault.secret_versions, vault.admin_tokens TO %I', role_name);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON vault.roles, vault.role_permissions, vault.auth_lockouts TO %I', role_name);
    EXECUTE format('GRANT SELECT, INSERT ON vault.audit_log TO %I', role_name);
    EXECUTE format('GRANT SELECT ON vault.schema_migrations TO %I', role_name);
    EXECUTE format('GRANT EXECUTE ON FUNCTION vault.verify_audit_chain() TO %I', role_name);
    FOREACH t IN ARRAY ARRAY['secrets', 'secret_versions', 'admin_tokens', 'roles', 'role_permissions', 'auth_lockouts'] LOOP
        EXECUTE format('DROP POLICY IF EXISTS %I ON vault.%I', policy, t);
        EXECUTE format('CREATE POLICY %I ON vault.%I TO %I USING (true) WITH CHECK (true)', policy, t, role_name);
    END LOOP;
    EXECUTE format('DROP POLICY IF EXISTS %I ON vault.audit_log', policy || '_read');
    EXECUTE format('DROP POLICY IF EXISTS %I ON vault.audit_log', policy || '_append');
    EXECUTE format('CREATE POLICY %I ON vault.audit_log FOR SELECT TO %I USING (true)', policy || '_read', role_name);
    EXECUTE format('CREATE POLICY %I ON vault.audit_log FOR INSERT TO %I WITH CHECK (true)', policy || '_append', role_name);
    EXECUTE format('DROP POLICY IF EXISTS %I ON vault.schema_migrations', policy);
    EXECUTE format('CREATE POLICY %I ON vault.schema_migrations FOR SELECT TO %I USING (true)', policy, role_name);
END $$;

REVOKE ALL ON FUNCTION vault.grant_service_role(name) FROM PUBLIC;
