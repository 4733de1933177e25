-- Tenant offboarding (issue 15): `cargo xtask tenant delete <slug>` deletes every row of
-- a tenant in every schema, as the role beacon_offboard, through app.offboard_tenant
-- only (security/access-model.toml). Tokens already issued stop working at once.
--
--   app.offboarded_tenants  the tombstone: the tenant's id and when it left, nothing
--                           else. Written first; from then on the api refuses the
--                           tenant's tokens (app.token_revoked) and the loader its
--                           events (raw.enqueue_batch). It stays: it is what keeps a
--                           token signed before the deletion dead until it expires, and
--                           the record that the tenant was deleted.
--   app.offboard_tenant     deletes at most p_batch rows per call, table by table, in
--                           an order the foreign keys allow; the tables are found in the
--                           catalog (every table of app, raw and output with a
--                           tenant_id column), so a table added later is not forgotten.
--                           When nothing is left, deletes the tenant itself.

CREATE TABLE app.offboarded_tenants (
    tenant_id     uuid PRIMARY KEY,
    started_at    timestamptz NOT NULL DEFAULT now(),
    completed_at  timestamptz
);
ALTER TABLE app.offboarded_tenants ENABLE ROW LEVEL SECURITY;
ALTER TABLE app.offboarded_tenants FORCE ROW LEVEL SECURITY;
CREATE POLICY owner_all ON app.offboarded_tenants TO beacon_owner USING (true);

-- Advisory-lock namespace of "a tenant's rows are being written by the loader" (shared)
-- vs "the tenant is being offboarded" (exclusive): 0x62656f66, "beof".

-- A token is refused once signed out, or once its tenant is offboarded. Replaces
-- token_revoked(uuid): the api passes the token's tenant.
CREATE FUNCTION app.token_revoked(p_jti uuid, p_tenant uuid)
    RETURNS boolean
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
        SELECT EXISTS (SELECT 1 FROM app.revoked_tokens r WHERE r.jti = p_jti)
            OR EXISTS (SELECT 1 FROM app.offboarded_tenants o WHERE o.tenant_id = p_tenant)
    $$;
REVOKE ALL ON FUNCTION app.token_revoked(uuid, uuid) FROM PUBLIC;
DROP FUNCTION app.token_revoked(uuid);

-- The loader's batches: as before (20261129000001), plus the offboarding guard. The
-- shared lock is held until the loading transaction ends, so offboarding (exclusive)
-- waits for every load in flight and sees its rows; a load that comes after sees the
-- tombstone and is refused whole.
CREATE OR REPLACE FUNCTION raw.enqueue_batch() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
    DECLARE
        t uuid;
    BEGIN
        FOR t IN
            INSERT INTO raw.batches AS b (tenant_id, loaded_xid, events)
            SELECT tenant_id, pg_current_xact_id(), count(*) FROM inserted GROUP BY tenant_id
            ON CONFLICT (tenant_id, loaded_xid) DO UPDATE SET events = b.events + excluded.events
            RETURNING b.tenant_id
        LOOP
            PERFORM pg_advisory_xact_lock_shared(1650814822, hashtext(t::text));
            IF EXISTS (SELECT 1 FROM app.offboarded_tenants o WHERE o.tenant_id = t) THEN
                RAISE EXCEPTION 'tenant % is offboarded: events refused', t
                    USING ERRCODE = 'insufficient_privilege';
            END IF;
        END LOOP;
        RETURN NULL;
    END
    $$;

CREATE FUNCTION app.offboard_tenant(p_slug text, p_batch integer)
    RETURNS TABLE (relation text, deleted bigint)
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
    #variable_conflict use_column
    DECLARE
        v_tenant uuid;
        budget bigint := p_batch;
        remaining oid[];
        ready oid;
        n bigint;
    BEGIN
        IF p_batch IS NULL OR p_batch < 1 THEN
            RAISE EXCEPTION 'p_batch must be at least 1';
        END IF;
        SELECT t.id INTO v_tenant FROM app.tenants t WHERE t.slug = p_slug;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'no tenant with the slug %', p_slug USING ERRCODE = 'no_data_found';
        END IF;
        -- Loads in flight finish first; later ones see the tombstone.
        PERFORM pg_advisory_xact_lock(1650814822, hashtext(v_tenant::text));
        INSERT INTO app.offboarded_tenants (tenant_id) VALUES (v_tenant)
        ON CONFLICT (tenant_id) DO NOTHING;
        -- The transform's facts lock (pipeline::transform::FACTS_LOCK): no chunk of the
        -- tenant is being aggregated while its rows go.
        PERFORM pg_advisory_xact_lock(1650811235, hashtext(v_tenant::text));

        -- Every table with tenant rows (partitions through their parent), raw first,
        -- then output, then app.
        remaining := ARRAY(
            SELECT c.oid
            FROM pg_class c
            JOIN pg_namespace s ON s.oid = c.relnamespace
            JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped
            WHERE s.nspname IN ('app', 'raw', 'output') AND c.relkind IN ('r', 'p')
              AND NOT c.relispartition AND c.oid <> 'app.offboarded_tenants'::regclass
            ORDER BY array_position(ARRAY['raw', 'output', 'app']::name[], s.nspname), c.relname);
        WHILE cardinality(remaining) > 0 LOOP
            -- The first table no other remaining table references.
            ready := NULL;
            SELECT u.r INTO ready FROM unnest(remaining) WITH ORDINALITY AS u(r, i)
            WHERE NOT EXISTS (
                SELECT 1 FROM pg_constraint k
                WHERE k.contype = 'f' AND k.confrelid = u.r AND k.conrelid <> u.r
                  AND k.conrelid = ANY (remaining))
            ORDER BY u.i LIMIT 1;
            IF ready IS NULL THEN
                RAISE EXCEPTION 'foreign keys between % form a cycle', remaining::regclass[];
            END IF;
            EXECUTE format(
                'DELETE FROM %s x WHERE x.tenant_id = $1
                   AND x.ctid = ANY (ARRAY(SELECT y.ctid FROM %s y WHERE y.tenant_id = $1 LIMIT $2))',
                ready::regclass, ready::regclass)
                USING v_tenant, budget;
            GET DIAGNOSTICS n = ROW_COUNT;
            IF n > 0 THEN
                relation := ready::regclass::text;
                deleted := n;
                RETURN NEXT;
            END IF;
            budget := budget - n;
            IF budget <= 0 THEN
                -- This call's share is done; the caller calls again.
                RETURN;
            END IF;
            remaining := array_remove(remaining, ready);
        END LOOP;

        DELETE FROM app.tenants t WHERE t.id = v_tenant;
        UPDATE app.offboarded_tenants o SET completed_at = now() WHERE o.tenant_id = v_tenant;
        relation := 'app.tenants';
        deleted := 1;
        RETURN NEXT;
    END
    $$;
REVOKE ALL ON FUNCTION app.offboard_tenant(text, integer) FROM PUBLIC;
