-- The transform's work, tracked per tenant instead of by one cluster-wide watermark.
-- Runs as beacon_migrator acting as beacon_owner. Grants match security/access-model.toml.
--
-- Before: one xid8 watermark for all tenants, bounded by the oldest transaction running
-- anywhere on the PostgreSQL cluster. An analyst's open transaction, or a test in
-- another database, held back every tenant; one tenant's slow attribution held back
-- every other tenant's numbers.
--
-- After:
--   raw.batches              one row per loading transaction and tenant, written by a
--                            trigger in the same transaction as the events, so it
--                            becomes visible exactly when they do: the transform
--                            processes what is committed, never waits for what is not,
--                            and deletes the row in the transaction that aggregates it
--                            (exactly once).
--   output.attribution_work  the tenant-days whose attribution must be recomputed, each
--                            claimed on its own (FOR UPDATE SKIP LOCKED), with its own
--                            time budget; a day that fails or exceeds it is set aside
--                            with backoff while the others advance.

CREATE TABLE raw.batches (
    tenant_id    uuid NOT NULL,
    loaded_xid   xid8 NOT NULL,
    events       bigint NOT NULL CHECK (events > 0),
    received_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, loaded_xid)
);
COMMENT ON TABLE raw.batches IS
    'Loaded but not yet aggregated: one row per loading transaction and tenant (raw.events.loaded_xid). '
    'Written by the trigger on raw.events, deleted by the transform when it aggregates those events.';

-- Fires once per INSERT statement with the rows actually inserted (ON CONFLICT DO
-- NOTHING leaves duplicates out of the transition table). SECURITY DEFINER so the
-- loader needs no privilege on raw.batches: it cannot read, change or forge the queue.
CREATE FUNCTION raw.enqueue_batch() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
    BEGIN
        INSERT INTO raw.batches AS b (tenant_id, loaded_xid, events)
        SELECT tenant_id, pg_current_xact_id(), count(*) FROM inserted GROUP BY tenant_id
        ON CONFLICT (tenant_id, loaded_xid) DO UPDATE SET events = b.events + excluded.events;
        RETURN NULL;
    END
    $$;
CREATE TRIGGER events_enqueue_batch AFTER INSERT ON raw.events
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION raw.enqueue_batch();

CREATE TABLE output.attribution_work (
    tenant_id    uuid NOT NULL,
    day          date NOT NULL,
    -- failed or over-budget recomputations so far; reset when the day is done
    attempts     integer NOT NULL DEFAULT 0,
    not_before   timestamptz NOT NULL DEFAULT now(),
    last_error   text,
    queued_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, day)
);
CREATE INDEX attribution_work_due_idx ON output.attribution_work (not_before);

-- What the watermark had not reached yet becomes queued work: nothing is lost or
-- counted twice across the upgrade. (Stop the transform and the loaders for the
-- migration, as for every migration: docs/ARCHITECTURE.md §5.)
INSERT INTO raw.batches (tenant_id, loaded_xid, events, received_at)
SELECT e.tenant_id, e.loaded_xid, count(*), min(e.received_at)
FROM raw.events e, output.transform_state s
WHERE e.loaded_xid >= s.watermark
GROUP BY e.tenant_id, e.loaded_xid;
DROP TABLE output.transform_state;

ALTER TABLE raw.batches ENABLE ROW LEVEL SECURITY;
ALTER TABLE raw.batches FORCE ROW LEVEL SECURITY;
ALTER TABLE output.attribution_work ENABLE ROW LEVEL SECURITY;
ALTER TABLE output.attribution_work FORCE ROW LEVEL SECURITY;
CREATE POLICY owner_all ON raw.batches TO beacon_owner USING (true);
CREATE POLICY owner_all ON output.attribution_work TO beacon_owner USING (true);
-- transform and analysts work across tenants.
CREATE POLICY transform_all ON raw.batches TO beacon_transform USING (true);
CREATE POLICY analyst_read ON raw.batches FOR SELECT TO beacon_analyst USING (true);
CREATE POLICY transform_all ON output.attribution_work TO beacon_transform USING (true) WITH CHECK (true);
CREATE POLICY analyst_read ON output.attribution_work FOR SELECT TO beacon_analyst USING (true);

GRANT SELECT, DELETE ON raw.batches TO beacon_transform;
GRANT SELECT ON raw.batches TO beacon_analyst;
GRANT SELECT, INSERT, UPDATE, DELETE ON output.attribution_work TO beacon_transform;
GRANT SELECT ON output.attribution_work TO beacon_analyst;

-- A user's clicks in exactly the order attribution reads them (latest first, ties by
-- event_id), so "the N most recent clicks before a conversion" is one index range read
-- that stops after N entries, whatever the planner knows about the table.
CREATE INDEX events_click_user_recent_idx
    ON raw.events (tenant_id, user_key, occurred_at DESC, event_id COLLATE "C" DESC)
    WHERE event_type = 'click';
DROP INDEX raw.events_click_user_idx;

-- Attribution looks back at most N clicks per conversion (the transform's
-- BEACON_ATTRIBUTION_MAX_CLICKS, default 50): the cost of a conversion is bounded
-- whatever one user_key (say, a constant "anonymous") has accumulated.
COMMENT ON TABLE output.attribution IS
    'Conversions credited to the clicks of the same user_key within the look-back window, per conversion day. '
    'Only the N most recent clicks of that user at or before the conversion and within the window count '
    '(N = BEACON_ATTRIBUTION_MAX_CLICKS of the transform, default 50; ties on time broken by event_id), '
    'so both models are exact for paths of up to N clicks and bounded in cost beyond. '
    'last_click: the latest such click gets 1 conversion (1000000 micros) and its revenue. '
    'linear: each such click gets 1/n, remainders to the latest click, so every attributed conversion sums to exactly 1000000 and its revenue. '
    'Conversions without a user_key or without a click in the window are not attributed.';
