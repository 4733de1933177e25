-- Conversion attribution (pipeline transform). Runs as beacon_migrator acting as
-- beacon_owner. No grant changes: transform already has SELECT on raw.events and
-- SELECT/INSERT/UPDATE/DELETE on output.attribution (security/access-model.toml).

-- A user's clicks before a conversion, and the conversions after a (late) click, are
-- looked up by (tenant, user, time). One partial index per event type: only clicks and
-- conversions carry attribution, so impressions and spend (~80% of events) do not pay
-- for them on the loader's insert path, and a planner without statistics (right after
-- a bulk load) cannot pick an index that lacks the user column.
CREATE INDEX events_click_user_idx ON raw.events (tenant_id, user_key, occurred_at)
    WHERE event_type = 'click';
CREATE INDEX events_conversion_user_idx ON raw.events (tenant_id, user_key, occurred_at)
    WHERE event_type = 'conversion';

-- The conversions of one tenant-day, recomputed when any of them may have changed.
-- Keyed on the UTC day expression (what the transform filters on) rather than on
-- occurred_at, so it cannot compete with the indexes above for time-range look-ups.
CREATE INDEX events_conversion_date_idx ON raw.events (tenant_id, ((occurred_at AT TIME ZONE 'UTC')::date))
    WHERE event_type = 'conversion';

COMMENT ON TABLE output.attribution IS
    'Conversions credited to the clicks of the same user_key within the look-back window, per conversion day. '
    'last_click: the latest click at or before the conversion gets 1 conversion (1000000 micros) and its revenue. '
    'linear: each click in the window gets 1/n, remainders to the latest click, so every attributed conversion sums to exactly 1000000 and its revenue. '
    'Conversions without a user_key or without a click in the window are not attributed.';
