-- Subject erasure (issue 15): a tenant erases one end user's (`user_key`) events and
-- everything derived from them. Grants match security/access-model.toml (grants.sql
-- re-applies exactly the model's after every migration run).
--
--   app.erasures        the erasure ledger: one row per request, keyed by an HMAC of
--                       the user_key (the api holds the key); the user_key itself is
--                       kept only while its events are being deleted, then erased too.
--   app.erasure_step    one bounded step of the tenant's oldest open erasure, called
--                       by the transform under the tenant's facts lock: deletes at most
--                       p_limit of the subject's clicks and as many conversions (found
--                       through their user_key indexes) and its impressions and spend
--                       among the next p_scan events of the tenant in primary-key order
--                       (no index on the ingest path for them: a cursor walks the
--                       tenant's events once per erasure), subtracts them from the daily
--                       facts (when they were aggregated already) and queues the
--                       attribution days of the deleted conversions in
--                       output.attribution_work, which the transform recomputes like
--                       any other queued day.
--
-- Status: pending (events being deleted; user_key present) -> recomputing (no event
-- left; user_key gone; waiting for its attribution days) -> completed.

CREATE TABLE app.erasures (
    id            uuid PRIMARY KEY,
    tenant_id     uuid NOT NULL REFERENCES app.tenants (id),
    -- HMAC-SHA256(key, tenant_id || user_key): the only trace of the subject once erased.
    subject_hash  bytea NOT NULL CHECK (length(subject_hash) = 32),
    user_key      text CHECK (length(user_key) BETWEEN 1 AND 1024),
    -- `user:<id>` or `key:<id>`: who asked.
    requested_by  text NOT NULL CHECK (length(requested_by) BETWEEN 1 AND 200),
    requested_at  timestamptz NOT NULL DEFAULT now(),
    status        text NOT NULL DEFAULT 'pending'
                  CHECK (status IN ('pending', 'recomputing', 'completed')),
    events_erased bigint NOT NULL DEFAULT 0,
    -- Conversion days whose attribution must be recomputed (at most one per day of
    -- raw retention).
    days          date[] NOT NULL DEFAULT '{}',
    -- The scan for impressions and spend: the last event_id of the tenant looked at.
    scan_after    text,
    erased_at     timestamptz,
    completed_at  timestamptz,
    CONSTRAINT erasures_key_only_while_pending CHECK ((status = 'pending') = (user_key IS NOT NULL))
);
-- One open erasure per subject: a repeated request finds it (idempotent).
CREATE UNIQUE INDEX erasures_open_subject_key ON app.erasures (tenant_id, subject_hash)
    WHERE status <> 'completed';
CREATE INDEX erasures_tenant_idx ON app.erasures (tenant_id, requested_at DESC);

ALTER TABLE app.erasures ENABLE ROW LEVEL SECURITY;
ALTER TABLE app.erasures FORCE ROW LEVEL SECURITY;
CREATE POLICY owner_all ON app.erasures TO beacon_owner USING (true);
CREATE POLICY api_read ON app.erasures FOR SELECT TO beacon_api
    USING (tenant_id = app.current_tenant());
CREATE POLICY api_insert ON app.erasures FOR INSERT TO beacon_api
    WITH CHECK (tenant_id = app.current_tenant() AND status = 'pending');
-- The transform works across tenants (it finds the tenants with open erasures).
CREATE POLICY transform_read ON app.erasures FOR SELECT TO beacon_transform USING (true);

-- API keys may carry the new scope.
ALTER TABLE app.api_keys DROP CONSTRAINT api_keys_scopes_check;
ALTER TABLE app.api_keys ADD CONSTRAINT api_keys_scopes_check
    CHECK (scopes <@ ARRAY['events:write', 'kpis:read', 'subjects:erase']::text[] AND cardinality(scopes) > 0);

-- No new index on raw.events: clicks and conversions have (tenant_id, user_key, …)
-- indexes already; one for impressions and spend would cost every load 25–39 % more
-- insert time (docs/BENCHMARKS.md, "Subject erasure"), for the rare erasure. Those are
-- found by a bounded scan instead.

-- One step of the oldest open erasure of p_tenant. The caller (the transform) holds the
-- tenant's facts lock, so no chunk of this tenant is being aggregated meanwhile: an
-- event whose loading transaction is still queued in raw.batches has not been added to
-- the facts and is simply deleted; any other was, and is subtracted.
-- Returns the erasure advanced, the events deleted, and its status afterwards; no row
-- when the tenant has no open erasure or the open one waits for its attribution days.
CREATE FUNCTION app.erasure_step(p_tenant uuid, p_limit integer, p_scan integer)
    RETURNS TABLE (erasure uuid, deleted bigint, status text)
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
    #variable_conflict use_column
    DECLARE
        e record;
        n bigint;
        new_days date[];
        finished boolean;
        last_seen text;
    BEGIN
        IF p_limit IS NULL OR p_limit < 1 OR p_scan IS NULL OR p_scan < 1 THEN
            RAISE EXCEPTION 'p_limit and p_scan must be at least 1';
        END IF;
        SELECT x.id, x.user_key, x.status, x.days, x.scan_after INTO e FROM app.erasures x
        WHERE x.tenant_id = p_tenant AND x.status <> 'completed'
        ORDER BY x.requested_at, x.id LIMIT 1 FOR UPDATE;
        IF NOT FOUND THEN
            RETURN;
        END IF;
        IF e.status = 'recomputing' THEN
            -- Done once none of its conversion days waits in the transform's queue.
            IF EXISTS (SELECT 1 FROM output.attribution_work w
                       WHERE w.tenant_id = p_tenant AND w.day = ANY (e.days)) THEN
                RETURN;
            END IF;
            UPDATE app.erasures x SET status = 'completed', completed_at = now() WHERE x.id = e.id;
            RETURN QUERY SELECT e.id, 0::bigint, 'completed'::text;
            RETURN;
        END IF;

        -- In one statement, so what it deletes, the pending batches it checks and the
        -- facts it corrects are one snapshot: at most p_limit clicks and p_limit
        -- conversions of the subject (through their indexes), and the subject's
        -- impressions and spend among the next p_scan events of the tenant.
        WITH scanned AS (
            SELECT w.event_id, w.event_type, w.user_key FROM raw.events w
            WHERE w.tenant_id = p_tenant AND w.event_id > coalesce(e.scan_after, '')
            ORDER BY w.event_id LIMIT p_scan
        ), victims AS (
            (SELECT v.event_id FROM raw.events v WHERE v.tenant_id = p_tenant AND v.user_key = e.user_key
                AND v.event_type = 'click' LIMIT p_limit)
            UNION ALL
            (SELECT v.event_id FROM raw.events v WHERE v.tenant_id = p_tenant AND v.user_key = e.user_key
                AND v.event_type = 'conversion' LIMIT p_limit)
            UNION ALL
            SELECT w.event_id FROM scanned w
            WHERE w.user_key = e.user_key AND w.event_type IN ('impression', 'spend')
        ), gone AS (
            DELETE FROM raw.events d
            USING victims v
            WHERE d.tenant_id = p_tenant AND d.event_id = v.event_id AND d.user_key = e.user_key
            RETURNING (d.occurred_at AT TIME ZONE 'UTC')::date AS day, d.campaign, d.channel,
                      d.currency, d.event_type, d.cost_micros, d.revenue_micros,
                      -- still queued: not in the facts yet
                      NOT EXISTS (SELECT 1 FROM raw.batches b
                                  WHERE b.tenant_id = p_tenant AND b.loaded_xid = d.loaded_xid) AS aggregated
        ), delta AS (
            SELECT g.day, g.campaign, g.channel, g.currency,
                   count(*) FILTER (WHERE g.event_type = 'impression') AS impressions,
                   count(*) FILTER (WHERE g.event_type = 'click') AS clicks,
                   count(*) FILTER (WHERE g.event_type = 'conversion') AS conversions,
                   coalesce(sum(g.cost_micros), 0) AS spend,
                   coalesce(sum(g.revenue_micros), 0) AS revenue
            FROM gone g WHERE g.aggregated
            GROUP BY g.day, g.campaign, g.channel, g.currency
        ), emptied AS (
            -- A facts row that counted nothing else goes.
            DELETE FROM output.daily_campaign_facts f USING delta d
            WHERE f.tenant_id = p_tenant AND f.day = d.day AND f.campaign = d.campaign
              AND f.channel = d.channel AND f.currency = d.currency
              AND f.impressions = d.impressions AND f.clicks = d.clicks
              AND f.conversions = d.conversions AND f.spend_micros = d.spend
              AND f.revenue_micros = d.revenue
            RETURNING 1
        ), reduced AS (
            UPDATE output.daily_campaign_facts f SET
                impressions = f.impressions - d.impressions,
                clicks = f.clicks - d.clicks,
                conversions = f.conversions - d.conversions,
                spend_micros = f.spend_micros - d.spend,
                revenue_micros = f.revenue_micros - d.revenue,
                updated_at = now()
            FROM delta d
            WHERE f.tenant_id = p_tenant AND f.day = d.day AND f.campaign = d.campaign
              AND f.channel = d.channel AND f.currency = d.currency
              AND NOT (f.impressions = d.impressions AND f.clicks = d.clicks
                       AND f.conversions = d.conversions AND f.spend_micros = d.spend
                       AND f.revenue_micros = d.revenue)
            RETURNING 1
        ), conversion_days AS (
            -- Attribution is per user_key: the subject's clicks only ever credited the
            -- subject's conversions, so the days of the deleted conversions are all
            -- that changes. Queued like any other day (a recomputation in flight is
            -- waited for and the day queued anew: docs/ARCHITECTURE.md §5).
            SELECT DISTINCT g.day FROM gone g WHERE g.event_type = 'conversion'
        ), queued AS (
            INSERT INTO output.attribution_work (tenant_id, day)
            SELECT p_tenant, c.day FROM conversion_days c
            ON CONFLICT (tenant_id, day) DO NOTHING
            RETURNING 1
        )
        SELECT (SELECT count(*) FROM gone),
               coalesce((SELECT array_agg(c.day) FROM conversion_days c), '{}'),
               (SELECT count(*) FROM gone g WHERE g.event_type = 'click') < p_limit
                   AND (SELECT count(*) FROM gone g WHERE g.event_type = 'conversion') < p_limit
                   AND (SELECT count(*) FROM scanned) < p_scan,
               (SELECT max(w.event_id) FROM scanned w)
        INTO n, new_days, finished, last_seen;

        UPDATE app.erasures x SET
            events_erased = x.events_erased + n,
            days = ARRAY(SELECT DISTINCT d FROM unnest(x.days || new_days) d ORDER BY d),
            scan_after = coalesce(last_seen, x.scan_after)
        WHERE x.id = e.id;
        IF finished THEN
            -- Nothing of the subject is left: forget the key itself.
            UPDATE app.erasures x SET status = 'recomputing', user_key = NULL, erased_at = now()
            WHERE x.id = e.id;
            RETURN QUERY SELECT e.id, n, 'recomputing'::text;
        ELSE
            RETURN QUERY SELECT e.id, n, 'pending'::text;
        END IF;
    END
    $$;
REVOKE ALL ON FUNCTION app.erasure_step(uuid, integer, integer) FROM PUBLIC;
