-- Beacon's schemas. Runs as beacon_migrator, whose sessions act as the login-less
-- owner role beacon_owner (see crates/db/src/roles.sql), so every object is owned by
-- a role nobody can log in as. Grants below must match security/access-model.toml:
-- the access-model test fails on any difference, in either direction.

CREATE SCHEMA app;
CREATE SCHEMA raw;
CREATE SCHEMA output;
REVOKE ALL ON SCHEMA app, raw, output FROM PUBLIC;
ALTER DEFAULT PRIVILEGES REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;

-- The tenant of the current transaction, set with set_config('beacon.tenant_id', …, true).
-- NULL when unset, so a policy comparing to it matches nothing.
CREATE FUNCTION app.current_tenant() RETURNS uuid
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT NULLIF(current_setting('beacon.tenant_id', true), '')::uuid $$;
GRANT EXECUTE ON FUNCTION app.current_tenant() TO PUBLIC;

------------------------------------------------------------------------------ app
CREATE TABLE app.tenants (
    id          uuid PRIMARY KEY,
    slug        text NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9-]{2,40}$'),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    currency    char(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE app.users (
    id             uuid PRIMARY KEY,
    tenant_id      uuid NOT NULL REFERENCES app.tenants (id),
    email          text NOT NULL CHECK (email = lower(email) AND length(email) <= 254),
    display_name   text NOT NULL CHECK (length(display_name) BETWEEN 1 AND 200),
    password_hash  text NOT NULL,
    role           text NOT NULL CHECK (role IN ('viewer', 'admin')),
    disabled_at    timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT users_email_key UNIQUE (email)
);
CREATE INDEX users_tenant_idx ON app.users (tenant_id);

CREATE TABLE app.api_keys (
    id           uuid PRIMARY KEY,
    tenant_id    uuid NOT NULL REFERENCES app.tenants (id),
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    prefix       text NOT NULL UNIQUE,
    secret_hash  bytea NOT NULL,
    scopes       text[] NOT NULL CHECK (scopes <@ ARRAY['events:write', 'kpis:read']::text[] AND cardinality(scopes) > 0),
    created_by   uuid REFERENCES app.users (id),
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz
);
CREATE INDEX api_keys_tenant_idx ON app.api_keys (tenant_id);

CREATE TABLE app.audit_log (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id    uuid REFERENCES app.tenants (id),
    occurred_at  timestamptz NOT NULL DEFAULT now(),
    actor        text NOT NULL,
    action       text NOT NULL,
    outcome      text NOT NULL CHECK (outcome IN ('success', 'failure', 'denied')),
    client_addr  text,
    request_id   text,
    details      jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_tenant_idx ON app.audit_log (tenant_id, occurred_at DESC);

------------------------------------------------------------------------------ raw
CREATE TABLE raw.events (
    tenant_id       uuid NOT NULL,
    event_id        text NOT NULL CHECK (length(event_id) BETWEEN 1 AND 256),
    event_type      text NOT NULL CHECK (event_type IN ('impression', 'click', 'conversion', 'spend')),
    occurred_at     timestamptz NOT NULL,
    campaign        text NOT NULL,
    channel         text NOT NULL,
    user_key        text,
    cost_micros     bigint NOT NULL DEFAULT 0 CHECK (cost_micros >= 0),
    revenue_micros  bigint NOT NULL DEFAULT 0 CHECK (revenue_micros >= 0),
    currency        char(3) NOT NULL,
    utm_source      text,
    utm_medium      text,
    utm_campaign    text,
    utm_term        text,
    utm_content     text,
    received_at     timestamptz NOT NULL DEFAULT now(),
    -- The loading transaction: transform processes rows whose transaction is older
    -- than every running one, so a slow commit can never be skipped.
    loaded_xid      xid8 NOT NULL DEFAULT pg_current_xact_id(),
    PRIMARY KEY (tenant_id, event_id)
);
CREATE INDEX events_loaded_xid_idx ON raw.events (loaded_xid);

--------------------------------------------------------------------------- output
CREATE TABLE output.daily_campaign_facts (
    tenant_id       uuid NOT NULL,
    day             date NOT NULL,
    campaign        text NOT NULL,
    channel         text NOT NULL,
    currency        char(3) NOT NULL,
    impressions     bigint NOT NULL DEFAULT 0,
    clicks          bigint NOT NULL DEFAULT 0,
    conversions     bigint NOT NULL DEFAULT 0,
    spend_micros    bigint NOT NULL DEFAULT 0,
    revenue_micros  bigint NOT NULL DEFAULT 0,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, day, campaign, channel, currency)
);

CREATE TABLE output.attribution (
    tenant_id           uuid NOT NULL,
    day                 date NOT NULL,
    campaign            text NOT NULL,
    channel             text NOT NULL,
    currency            char(3) NOT NULL,
    model               text NOT NULL CHECK (model IN ('last_click', 'linear')),
    -- fractional conversions (linear credit) in millionths of a conversion
    conversions_micros  bigint NOT NULL DEFAULT 0,
    revenue_micros      bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, day, campaign, channel, currency, model)
);

-- Transform's watermark: all rows with loaded_xid below it are aggregated.
CREATE TABLE output.transform_state (
    id            boolean PRIMARY KEY DEFAULT true CHECK (id),
    watermark     xid8 NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now()
);
INSERT INTO output.transform_state (watermark) VALUES ('0'::xid8);

------------------------------------------------------------- row-level security
ALTER TABLE app.tenants ENABLE ROW LEVEL SECURITY;
ALTER TABLE app.tenants FORCE ROW LEVEL SECURITY;
ALTER TABLE app.users ENABLE ROW LEVEL SECURITY;
ALTER TABLE app.users FORCE ROW LEVEL SECURITY;
ALTER TABLE app.api_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE app.api_keys FORCE ROW LEVEL SECURITY;
ALTER TABLE app.audit_log ENABLE ROW LEVEL SECURITY;
ALTER TABLE app.audit_log FORCE ROW LEVEL SECURITY;
ALTER TABLE raw.events ENABLE ROW LEVEL SECURITY;
ALTER TABLE raw.events FORCE ROW LEVEL SECURITY;
ALTER TABLE output.daily_campaign_facts ENABLE ROW LEVEL SECURITY;
ALTER TABLE output.daily_campaign_facts FORCE ROW LEVEL SECURITY;
ALTER TABLE output.attribution ENABLE ROW LEVEL SECURITY;
ALTER TABLE output.attribution FORCE ROW LEVEL SECURITY;

-- api: its own tenant only, in every table it touches.
CREATE POLICY api_tenant ON app.tenants TO beacon_api USING (id = app.current_tenant());
CREATE POLICY api_tenant ON app.users TO beacon_api
    USING (tenant_id = app.current_tenant()) WITH CHECK (tenant_id = app.current_tenant());
CREATE POLICY api_tenant ON app.api_keys TO beacon_api
    USING (tenant_id = app.current_tenant()) WITH CHECK (tenant_id = app.current_tenant());
CREATE POLICY api_read ON app.audit_log FOR SELECT TO beacon_api USING (tenant_id = app.current_tenant());
-- Failed logins for unknown accounts have no tenant.
CREATE POLICY api_append ON app.audit_log FOR INSERT TO beacon_api
    WITH CHECK (tenant_id IS NULL OR tenant_id = app.current_tenant());

-- The owner (reachable only through the SECURITY DEFINER look-ups below and through
-- migrations) sees all rows.
CREATE POLICY owner_all ON app.tenants TO beacon_owner USING (true);
CREATE POLICY owner_all ON app.users TO beacon_owner USING (true);
CREATE POLICY owner_all ON app.api_keys TO beacon_owner USING (true);
CREATE POLICY owner_all ON app.audit_log TO beacon_owner USING (true);
CREATE POLICY owner_all ON raw.events TO beacon_owner USING (true);
CREATE POLICY owner_all ON output.daily_campaign_facts TO beacon_owner USING (true);
CREATE POLICY owner_all ON output.attribution TO beacon_owner USING (true);

-- loader: may only insert rows of the tenant of the verified token it was handed.
CREATE POLICY loader_insert ON raw.events FOR INSERT TO beacon_loader
    WITH CHECK (tenant_id = app.current_tenant());
-- transform and analysts work across tenants.
CREATE POLICY transform_read ON raw.events FOR SELECT TO beacon_transform USING (true);
CREATE POLICY analyst_read ON raw.events FOR SELECT TO beacon_analyst USING (true);
CREATE POLICY transform_all ON output.daily_campaign_facts TO beacon_transform USING (true) WITH CHECK (true);
CREATE POLICY transform_all ON output.attribution TO beacon_transform USING (true) WITH CHECK (true);
CREATE POLICY analyst_all ON output.daily_campaign_facts TO beacon_analyst USING (true) WITH CHECK (true);
CREATE POLICY analyst_all ON output.attribution TO beacon_analyst USING (true) WITH CHECK (true);
-- analytics: one tenant per transaction, whatever the query says.
CREATE POLICY analytics_tenant ON output.daily_campaign_facts FOR SELECT TO beacon_analytics
    USING (tenant_id = app.current_tenant());
CREATE POLICY analytics_tenant ON output.attribution FOR SELECT TO beacon_analytics
    USING (tenant_id = app.current_tenant());

------------------------------------------------- authentication look-ups (api)
-- Logging in happens before the tenant is known. Rather than letting beacon_api read
-- every tenant's users, these two functions return exactly one row for one secret
-- identifier, and nothing else.
CREATE FUNCTION app.login_lookup(p_email text)
    RETURNS TABLE (user_id uuid, tenant_id uuid, password_hash text, role text, disabled boolean)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
        SELECT u.id, u.tenant_id, u.password_hash, u.role, u.disabled_at IS NOT NULL
        FROM app.users u WHERE u.email = lower(p_email)
    $$;

CREATE FUNCTION app.api_key_lookup(p_prefix text)
    RETURNS TABLE (key_id uuid, tenant_id uuid, secret_hash bytea, scopes text[], revoked boolean)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
        SELECT k.id, k.tenant_id, k.secret_hash, k.scopes, k.revoked_at IS NOT NULL
        FROM app.api_keys k WHERE k.prefix = p_prefix
    $$;

-------------------------------------------------------------------------- grants
GRANT USAGE ON SCHEMA app TO beacon_api;
GRANT SELECT ON app.tenants TO beacon_api;
GRANT SELECT, INSERT, UPDATE ON app.users TO beacon_api;
GRANT SELECT, INSERT, UPDATE ON app.api_keys TO beacon_api;
GRANT SELECT, INSERT ON app.audit_log TO beacon_api;
GRANT EXECUTE ON FUNCTION app.login_lookup(text), app.api_key_lookup(text) TO beacon_api;

GRANT USAGE ON SCHEMA raw TO beacon_loader, beacon_transform, beacon_analyst;
GRANT INSERT ON raw.events TO beacon_loader;
GRANT SELECT ON raw.events TO beacon_transform, beacon_analyst;

GRANT USAGE ON SCHEMA output TO beacon_transform, beacon_analytics, beacon_analyst;
GRANT SELECT, INSERT, UPDATE, DELETE ON output.daily_campaign_facts, output.attribution TO beacon_transform, beacon_analyst;
GRANT SELECT, UPDATE ON output.transform_state TO beacon_transform;
GRANT SELECT ON output.transform_state TO beacon_analyst;
GRANT SELECT ON output.daily_campaign_facts, output.attribution TO beacon_analytics;
