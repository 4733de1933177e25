-- Raw events partitioned by month of occurred_at, and retention (issue 15, item 3).
-- Runs as beacon_migrator acting as beacon_owner. Grants come from
-- security/access-model.toml (grants.sql, applied after the migrations).
--
-- Layout: raw.events is a partitioned table (PARTITION BY RANGE (occurred_at)) with one
-- partition per UTC calendar month, named raw.events_pYYYYMM. Everyone reads and writes
-- through raw.events: its grants, its row-level-security policies and its trigger apply.
-- The partitions themselves carry no grant at all and have row-level security enabled
-- and forced without any policy, so naming a partition gets "permission denied", and
-- even the owner reads nothing through one.
--
-- Dedupe: a unique key of a partitioned table must contain the partition key, so the
-- primary key becomes (tenant_id, event_id, occurred_at). A re-sent event is the same
-- event: same event_id AND same occurred_at (the event's own time, never the time it was
-- received). It therefore lands in the same partition as the original, whenever the
-- retry happens, and ON CONFLICT DO NOTHING drops it exactly as before. An event can only
-- be stored while its partition exists: ingest refuses occurred_at older than
-- BEACON_MAX_EVENT_AGE_DAYS, and the retention job never drops a partition that still
-- holds a row younger than BEACON_RAW_RETENTION_DAYS (> BEACON_MAX_EVENT_AGE_DAYS), so
-- every event ingest accepts meets its original if there is one.
--
-- The migration converts the table in place, keeping every row, the loaded_xid of each
-- (raw.batches still points at them), the indexes, the trigger, the policies and the
-- comment. Stop the loaders and the transform for it, as for every migration
-- (docs/ARCHITECTURE.md §5).

------------------------------------------------------------ partition maintenance
-- SECURITY DEFINER, owned by beacon_owner (the owner of raw.events, the only role that
-- may attach or drop its partitions), EXECUTE only for beacon_retention (access model).
-- Each function does one bounded thing with fixed rules; the caller chooses only how
-- long to keep data, within limits checked here, and never what "now" is.

-- Creates the partition of one UTC month if it does not exist; returns its name, or
-- NULL when it already existed. Only months from 10 years back to 12 months ahead: a
-- caller cannot make the table grow without bound. The new table is built on its own
-- and then attached: ATTACH takes SHARE UPDATE EXCLUSIVE on raw.events, which neither
-- inserts nor reads wait for (CREATE TABLE … PARTITION OF would take ACCESS EXCLUSIVE).
CREATE FUNCTION raw.create_event_partition(p_month date) RETURNS text
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    SET TimeZone = 'UTC'
    SET lock_timeout = '5s'
    AS $$
    DECLARE
        v_from  timestamptz;
        v_to    timestamptz;
        v_name  text;
        v_now   timestamp := now() AT TIME ZONE 'UTC';
    BEGIN
        IF p_month IS NULL
           OR p_month < date_trunc('month', v_now - interval '10 years')::date
           OR p_month > date_trunc('month', v_now + interval '12 months')::date THEN
            RAISE EXCEPTION 'partition month % is outside [now - 10 years, now + 12 months]', p_month
                USING ERRCODE = '22023';
        END IF;
        v_from := date_trunc('month', p_month)::timestamp AT TIME ZONE 'UTC';
        v_to := (date_trunc('month', p_month) + interval '1 month')::timestamp AT TIME ZONE 'UTC';
        v_name := 'events_p' || to_char(p_month, 'YYYYMM');
        -- One maintenance run at a time (a second waits, then finds the table).
        PERFORM pg_advisory_xact_lock(hashtext('raw.events partitions'));
        IF to_regclass('raw.' || quote_ident(v_name)) IS NOT NULL THEN
            RETURN NULL;
        END IF;
        EXECUTE format('CREATE TABLE raw.%I (LIKE raw.events INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', v_name);
        EXECUTE format('ALTER TABLE raw.%I ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY', v_name);
        EXECUTE format('REVOKE ALL ON raw.%I FROM PUBLIC', v_name);
        EXECUTE format('ALTER TABLE raw.events ATTACH PARTITION raw.%I FOR VALUES FROM (%L) TO (%L)',
                       v_name, v_from, v_to);
        RETURN v_name;
    END
    $$;

-- Creates every missing monthly partition from the month p_keep_days ago through
-- p_ahead_months after the current one: the horizon within which ingest can never meet a
-- missing partition. Returns how many it created (at most 10 years + 12 months' worth).
CREATE FUNCTION raw.ensure_event_partitions(p_keep_days integer, p_ahead_months integer) RETURNS integer
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    SET TimeZone = 'UTC'
    AS $$
    DECLARE
        v_now     timestamp := now() AT TIME ZONE 'UTC';
        v_month   date;
        v_created integer := 0;
    BEGIN
        IF p_keep_days IS NULL OR p_keep_days NOT BETWEEN 1 AND 3650 THEN
            RAISE EXCEPTION 'keep_days must be between 1 and 3650, not %', p_keep_days USING ERRCODE = '22023';
        END IF;
        IF p_ahead_months IS NULL OR p_ahead_months NOT BETWEEN 1 AND 12 THEN
            RAISE EXCEPTION 'ahead_months must be between 1 and 12, not %', p_ahead_months USING ERRCODE = '22023';
        END IF;
        FOR v_month IN
            SELECT generate_series(date_trunc('month', v_now - make_interval(days => p_keep_days)),
                                   date_trunc('month', v_now) + make_interval(months => p_ahead_months),
                                   interval '1 month')::date
        LOOP
            IF raw.create_event_partition(v_month) IS NOT NULL THEN
                v_created := v_created + 1;
            END IF;
        END LOOP;
        RETURN v_created;
    END
    $$;

-- Drops the oldest partition whose every row is older than p_keep_days (its upper bound
-- is at or before now - p_keep_days), if any; returns its name or NULL. One partition
-- per call, so each drop is its own short transaction: DROP takes ACCESS EXCLUSIVE on
-- raw.events, and lock_timeout makes it give up (and the job retry later) rather than
-- queue inserts behind a long read.
CREATE FUNCTION raw.drop_expired_event_partition(p_keep_days integer) RETURNS text
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    SET TimeZone = 'UTC'
    SET lock_timeout = '2s'
    AS $$
    DECLARE
        v_cutoff timestamptz := now() - make_interval(days => p_keep_days);
        v_name   text;
    BEGIN
        IF p_keep_days IS NULL OR p_keep_days NOT BETWEEN 1 AND 3650 THEN
            RAISE EXCEPTION 'keep_days must be between 1 and 3650, not %', p_keep_days USING ERRCODE = '22023';
        END IF;
        PERFORM pg_advisory_xact_lock(hashtext('raw.events partitions'));
        SELECT c.relname INTO v_name
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'raw.events'::regclass
          AND c.relname ~ '^events_p[0-9]{6}$'
          AND (to_date(substr(c.relname, 9), 'YYYYMM') + interval '1 month')::timestamp AT TIME ZONE 'UTC' <= v_cutoff
        ORDER BY c.relname
        LIMIT 1;
        IF v_name IS NOT NULL THEN
            EXECUTE format('DROP TABLE raw.%I', v_name);
        END IF;
        RETURN v_name;
    END
    $$;

-- Deletes up to p_max_rows rows in all of output.daily_campaign_facts and
-- output.attribution (facts first) whose day is more than p_keep_days before today
-- (UTC); returns how many rows it deleted. The job calls it until it returns 0 or its per-run budget is
-- spent.
CREATE FUNCTION output.expire_aggregates(p_keep_days integer, p_max_rows integer) RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    SET TimeZone = 'UTC'
    SET lock_timeout = '5s'
    AS $$
    DECLARE
        v_cutoff date := (now() AT TIME ZONE 'UTC')::date - p_keep_days;
        v_facts  bigint;
        v_attr   bigint;
    BEGIN
        IF p_keep_days IS NULL OR p_keep_days NOT BETWEEN 1 AND 36500 THEN
            RAISE EXCEPTION 'keep_days must be between 1 and 36500, not %', p_keep_days USING ERRCODE = '22023';
        END IF;
        IF p_max_rows IS NULL OR p_max_rows NOT BETWEEN 1 AND 100000 THEN
            RAISE EXCEPTION 'max_rows must be between 1 and 100000, not %', p_max_rows USING ERRCODE = '22023';
        END IF;
        DELETE FROM output.daily_campaign_facts WHERE ctid = ANY (ARRAY(
            SELECT ctid FROM output.daily_campaign_facts WHERE day < v_cutoff LIMIT p_max_rows));
        GET DIAGNOSTICS v_facts = ROW_COUNT;
        DELETE FROM output.attribution WHERE ctid = ANY (ARRAY(
            SELECT ctid FROM output.attribution WHERE day < v_cutoff LIMIT p_max_rows - v_facts));
        GET DIAGNOSTICS v_attr = ROW_COUNT;
        RETURN v_facts + v_attr;
    END
    $$;

------------------------------------------------------------------- the conversion
DO $$
DECLARE
    v_indexes   text[];
    v_triggers  text[];
    v_policies  text[];
    v_comment   text;
    v_before    bigint;
    v_after     bigint;
    v_oldest    timestamp;
    v_month     date;
    v_def       text;
BEGIN
    -- What the table has today, whoever added it (indexes other than the primary key,
    -- triggers, policies, comment), to put back on the partitioned table.
    SELECT coalesce(array_agg(pg_get_indexdef(i.indexrelid)), '{}') INTO v_indexes
    FROM pg_index i WHERE i.indrelid = 'raw.events'::regclass AND NOT i.indisprimary;
    SELECT coalesce(array_agg(pg_get_triggerdef(t.oid)), '{}') INTO v_triggers
    FROM pg_trigger t WHERE t.tgrelid = 'raw.events'::regclass AND NOT t.tgisinternal;
    SELECT coalesce(array_agg(format('CREATE POLICY %I ON raw.events AS %s FOR %s TO %s%s%s',
               p.polname,
               CASE WHEN p.polpermissive THEN 'PERMISSIVE' ELSE 'RESTRICTIVE' END,
               CASE p.polcmd WHEN 'r' THEN 'SELECT' WHEN 'a' THEN 'INSERT' WHEN 'w' THEN 'UPDATE'
                             WHEN 'd' THEN 'DELETE' ELSE 'ALL' END,
               (SELECT string_agg(CASE WHEN r = 0 THEN 'PUBLIC' ELSE r::regrole::text END, ', ')
                FROM unnest(p.polroles) r),
               CASE WHEN p.polqual IS NULL THEN '' ELSE ' USING (' || pg_get_expr(p.polqual, p.polrelid) || ')' END,
               CASE WHEN p.polwithcheck IS NULL THEN '' ELSE ' WITH CHECK (' || pg_get_expr(p.polwithcheck, p.polrelid) || ')' END)),
           '{}') INTO v_policies
    FROM pg_policy p WHERE p.polrelid = 'raw.events'::regclass;
    v_comment := obj_description('raw.events'::regclass, 'pg_class');
    SELECT count(*), min(occurred_at) AT TIME ZONE 'UTC' INTO v_before, v_oldest FROM raw.events;

    ALTER TABLE raw.events RENAME TO events_unpartitioned;
    CREATE TABLE raw.events (LIKE raw.events_unpartitioned
        INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING COMMENTS INCLUDING STATISTICS)
        PARTITION BY RANGE (occurred_at);

    -- A partition for every month with data, and the default horizon (the accepted
    -- window of 400 days back, 2 months ahead); the retention job keeps it up per its
    -- configuration from then on.
    FOR v_month IN
        SELECT generate_series(
                   date_trunc('month', least(coalesce(v_oldest, 'infinity'),
                                             (now() AT TIME ZONE 'UTC') - interval '401 days')),
                   date_trunc('month', now() AT TIME ZONE 'UTC') + interval '2 months',
                   interval '1 month')::date
    LOOP
        PERFORM raw.create_event_partition(v_month);
    END LOOP;

    -- Every row, with its loaded_xid and received_at. The trigger is not there yet, so
    -- nothing is queued twice for the transform.
    INSERT INTO raw.events SELECT * FROM raw.events_unpartitioned;
    SELECT count(*) INTO v_after FROM raw.events;
    IF v_after <> v_before THEN
        RAISE EXCEPTION 'raw.events conversion copied % of % rows', v_after, v_before;
    END IF;
    DROP TABLE raw.events_unpartitioned;

    ALTER TABLE raw.events ADD CONSTRAINT events_pkey PRIMARY KEY (tenant_id, event_id, occurred_at);
    FOREACH v_def IN ARRAY v_indexes || v_triggers || v_policies LOOP
        EXECUTE v_def;
    END LOOP;
    ALTER TABLE raw.events ENABLE ROW LEVEL SECURITY;
    ALTER TABLE raw.events FORCE ROW LEVEL SECURITY;
    IF v_comment IS NOT NULL THEN
        EXECUTE format('COMMENT ON TABLE raw.events IS %L', v_comment);
    END IF;
END
$$;

COMMENT ON COLUMN raw.events.occurred_at IS
    'When the event happened (UTC), as the client sent it. Decides the monthly partition '
    '(raw.events_pYYYYMM); part of the primary key (tenant_id, event_id, occurred_at), so a '
    're-sent event (same event_id and occurred_at) always meets its original and is not stored twice.';
