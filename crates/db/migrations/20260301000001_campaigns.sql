-- Campaign metadata (issue 5): display name and archive flag per tenant. Grants and
-- row-level security exactly like the other app tables, and in
-- security/access-model.toml (the access-model test fails on any difference).

CREATE TABLE app.campaigns (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES app.tenants (id),
    -- The campaign name as events carry it (raw.events.campaign).
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    archived    boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT campaigns_tenant_name_key UNIQUE (tenant_id, name)
);

ALTER TABLE app.campaigns ENABLE ROW LEVEL SECURITY;
ALTER TABLE app.campaigns FORCE ROW LEVEL SECURITY;

CREATE POLICY api_tenant ON app.campaigns TO beacon_api
    USING (tenant_id = app.current_tenant()) WITH CHECK (tenant_id = app.current_tenant());
CREATE POLICY owner_all ON app.campaigns TO beacon_owner USING (true);

GRANT SELECT, INSERT, UPDATE ON app.campaigns TO beacon_api;
