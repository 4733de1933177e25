-- Sign-out revokes the access token; API keys show when they were last used (issue 13).
-- Grants and row-level security match security/access-model.toml (the access-model
-- test fails on any difference).

-- The deny-list: the `jti` of every access token revoked before its expiry. A row is
-- only needed until `expires_at` (after that the token fails verification anyway); the
-- api deletes its tenant's expired rows each time it adds one.
CREATE TABLE app.revoked_tokens (
    jti         uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES app.tenants (id),
    -- The token's `sub` (`user:<uuid>` or `key:<uuid>`), for the audit trail.
    subject     text NOT NULL CHECK (length(subject) BETWEEN 1 AND 200),
    expires_at  timestamptz NOT NULL,
    revoked_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX revoked_tokens_tenant_expiry_idx ON app.revoked_tokens (tenant_id, expires_at);

ALTER TABLE app.revoked_tokens ENABLE ROW LEVEL SECURITY;
ALTER TABLE app.revoked_tokens FORCE ROW LEVEL SECURITY;

CREATE POLICY api_tenant ON app.revoked_tokens TO beacon_api
    USING (tenant_id = app.current_tenant()) WITH CHECK (tenant_id = app.current_tenant());
CREATE POLICY owner_all ON app.revoked_tokens TO beacon_owner USING (true);

GRANT SELECT, INSERT, DELETE ON app.revoked_tokens TO beacon_api;

-- Checked on every authenticated request, after the signature: one statement, no
-- transaction. It answers one yes/no for one random identifier the caller already
-- holds, and nothing else (the pattern of app.login_lookup).
CREATE FUNCTION app.token_revoked(p_jti uuid)
    RETURNS boolean
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
        SELECT EXISTS (SELECT 1 FROM app.revoked_tokens r WHERE r.jti = p_jti)
    $$;
REVOKE ALL ON FUNCTION app.token_revoked(uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION app.token_revoked(uuid) TO beacon_api;

-- When a key last got a token. Written at most once a minute per key (the UPDATE's
-- own condition), so a busy ingest client does not turn every token into a row write.
ALTER TABLE app.api_keys ADD COLUMN last_used_at timestamptz;
