-- Time series: the hot forms of time_bucket (plain fmgr entry points in
-- extension/src/timeseries/fast.rs; the date and time-zone forms are
-- declared by pgrx from extension/src/timeseries/mod.rs).
--
-- TimescaleDB semantics: a width of months (and years), or of days and
-- time, not both; positive; default origin 2000-01-03 (a Monday) for fixed
-- widths and 2000-01-01 for months; timestamptz buckets in UTC; infinite
-- timestamps pass through. Pure: IMMUTABLE, STRICT, PARALLEL SAFE, no SET.

CREATE FUNCTION time_bucket(bucket_width interval, ts timestamptz) RETURNS timestamptz
    AS 'MODULE_PATHNAME', 'storefront_time_bucket_ts' LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION time_bucket(bucket_width interval, ts timestamp) RETURNS timestamp
    AS 'MODULE_PATHNAME', 'storefront_time_bucket_ts' LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION time_bucket(bucket_width interval, ts timestamptz, origin timestamptz) RETURNS timestamptz
    AS 'MODULE_PATHNAME', 'storefront_time_bucket_ts_origin' LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION time_bucket(bucket_width interval, ts timestamp, origin timestamp) RETURNS timestamp
    AS 'MODULE_PATHNAME', 'storefront_time_bucket_ts_origin' LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION time_bucket(bucket_width interval, ts timestamptz, "offset" interval) RETURNS timestamptz
    AS 'MODULE_PATHNAME', 'storefront_time_bucket_ts_offset' LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION time_bucket(bucket_width interval, ts timestamp, "offset" interval) RETURNS timestamp
    AS 'MODULE_PATHNAME', 'storefront_time_bucket_ts_offset' LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE;

-- The time-zone form: buckets align to local midnight (and local month
-- starts) in `timezone`; a day bucket spanning a DST change holds 23 or 25
-- hours. Not STRICT: a NULL origin or "offset" means "not given".
CREATE FUNCTION time_bucket(bucket_width interval, ts timestamptz, timezone text,
                            origin timestamptz DEFAULT NULL, "offset" interval DEFAULT NULL)
    RETURNS timestamptz
    AS 'MODULE_PATHNAME', 'storefront_time_bucket_tz' LANGUAGE c IMMUTABLE PARALLEL SAFE;

-- locf(value) OVER (ORDER BY bucket): the last non-NULL value so far, to
-- carry values forward over a time_bucket_series LEFT JOIN.
CREATE FUNCTION locf_step(state anyelement, value anyelement) RETURNS anyelement
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT coalesce(value, state) $$;
CREATE AGGREGATE locf(anyelement) (sfunc = locf_step, stype = anyelement);
