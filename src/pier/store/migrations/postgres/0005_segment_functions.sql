-- Rule-based segments (issue 13): how a value found in a JSON document becomes text, a number,
-- an instant or a truth (docs/segments-contract.md §4), for the SQL form of a rule
-- (store/segments_sql.py). SQLite runs the domain's own functions (domain/segments/values.py);
-- these are the same rules, and tests/store/test_segments_sql.py holds both to one answer.

-- Decimal text (already trimmed) as a double; NULL when it is not a decimal literal or lies
-- outside the range of doubles.
CREATE FUNCTION pier_seg_parse_number(t text) RETURNS float8
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
BEGIN
    IF t !~ '^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$' THEN
        RETURN NULL;
    END IF;
    IF t !~ '[eE]' AND length(t) < 300 THEN
        RETURN t::float8;  -- always within range: no need for the costly exception block
    END IF;
    BEGIN
        RETURN t::float8;
    EXCEPTION WHEN numeric_value_out_of_range THEN
        RETURN NULL;
    END;
END $$;

-- A double as JavaScript's String(x) writes it (30 -> '30', 1e21 -> '1e+21', 1e-7 -> '1e-7'),
-- from the shortest digits that read back as x (PostgreSQL's output with extra_float_digits 1).
CREATE FUNCTION pier_seg_js_text(x float8) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE SET extra_float_digits = 1 AS $$
DECLARE
    s text;
    mantissa text;
    e int := 0;
    whole text;
    digits text;
    stripped text;
    n int;
    k int;
    sign text := '';
BEGIN
    IF x = 0 THEN
        RETURN '0';
    END IF;
    IF x < 0 THEN
        sign := '-';
        x := -x;
    END IF;
    s := x::text;
    mantissa := split_part(s, 'e', 1);
    IF position('e' IN s) > 0 THEN
        e := split_part(s, 'e', 2)::int;
    END IF;
    whole := split_part(mantissa, '.', 1);
    digits := whole || split_part(mantissa, '.', 2);
    n := length(whole) + e;  -- x = 0.digits * 10^n
    stripped := ltrim(digits, '0');
    n := n - (length(digits) - length(stripped));
    digits := rtrim(stripped, '0');
    k := length(digits);
    IF k <= n AND n <= 21 THEN
        RETURN sign || digits || repeat('0', n - k);
    ELSIF 0 < n AND n <= 21 THEN
        RETURN sign || substr(digits, 1, n) || '.' || substr(digits, n + 1);
    ELSIF -6 < n AND n <= 0 THEN
        RETURN sign || '0.' || repeat('0', -n) || digits;
    END IF;
    RETURN sign || substr(digits, 1, 1) || CASE WHEN k > 1 THEN '.' || substr(digits, 2) ELSE '' END
        || 'e' || CASE WHEN n > 0 THEN '+' ELSE '-' END || abs(n - 1)::text;
END $$;

-- ISO 8601 text as milliseconds since 1970: YYYY-MM-DD, or with THH:MM[:SS[.fff...]] and Z,
-- +HH:MM or no zone (UTC); a space may stand for T. NULL for anything else or a date that does
-- not exist.
CREATE FUNCTION pier_seg_parse_date(t text) RETURNS bigint
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    m text[];
    y int;
    mo int;
    d int;
    h int;
    mi int;
    s int;
    ms int;
    off int := 0;
    last int;
    yy int;
    era int;
    yoe int;
    doe int;
BEGIN
    m := regexp_match(t, '^([0-9]{4})-([0-9]{2})-([0-9]{2})(?:[T ]([0-9]{2}):([0-9]{2})'
        || '(?::([0-9]{2})(?:\.([0-9]+))?)?(Z|[+-][0-9]{2}:[0-9]{2})?)?$');
    IF m IS NULL THEN
        RETURN NULL;
    END IF;
    y := m[1]::int;
    mo := m[2]::int;
    d := m[3]::int;
    h := coalesce(m[4], '0')::int;
    mi := coalesce(m[5], '0')::int;
    s := coalesce(m[6], '0')::int;
    IF mo < 1 OR mo > 12 OR d < 1 OR h > 23 OR mi > 59 OR s > 59 THEN
        RETURN NULL;
    END IF;
    -- (a CASE cannot stand in an IF's condition: PL/pgSQL reads up to the first THEN)
    last := CASE
        WHEN mo = 2 THEN CASE WHEN y % 4 = 0 AND (y % 100 <> 0 OR y % 400 = 0) THEN 29 ELSE 28 END
        WHEN mo IN (4, 6, 9, 11) THEN 30 ELSE 31 END;
    IF d > last THEN
        RETURN NULL;
    END IF;
    ms := rpad(substr(coalesce(m[7], ''), 1, 3), 3, '0')::int;
    IF m[8] IS NOT NULL AND m[8] <> 'Z' THEN
        IF substr(m[8], 2, 2)::int > 23 OR substr(m[8], 5, 2)::int > 59 THEN
            RETURN NULL;
        END IF;
        off := (substr(m[8], 2, 2)::int * 60 + substr(m[8], 5, 2)::int) * 60000
            * CASE WHEN left(m[8], 1) = '+' THEN 1 ELSE -1 END;
    END IF;
    -- days since 1970-01-01 of a proleptic Gregorian date (values.days_from_civil)
    yy := y - CASE WHEN mo <= 2 THEN 1 ELSE 0 END;
    era := floor(yy / 400.0)::int;
    yoe := yy - era * 400;
    doe := yoe * 365 + yoe / 4 - yoe / 100
        + (153 * (mo + CASE WHEN mo > 2 THEN -3 ELSE 9 END) + 2) / 5 + d - 1;
    RETURN (((era * 146097 + doe - 719468)::bigint * 24 + h) * 60 + mi) * 60000 + s * 1000 + ms
        - off;
END $$;

-- The four coercions of a found JSON value (§4.1-§4.4); NULL means no value.
CREATE FUNCTION pier_seg_text(v json) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE json_typeof(v)
        WHEN 'string' THEN v #>> '{}'
        WHEN 'boolean' THEN v #>> '{}'
        WHEN 'number' THEN pier_seg_js_text(pier_seg_parse_number(v #>> '{}'))
    END
$$;

CREATE FUNCTION pier_seg_number(v json) RETURNS float8
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE json_typeof(v)
        WHEN 'number' THEN pier_seg_parse_number(v #>> '{}')
        WHEN 'string' THEN pier_seg_parse_number(btrim(v #>> '{}', E' \t\n\r\013\014'))
        WHEN 'boolean' THEN CASE WHEN v #>> '{}' = 'true' THEN 1 ELSE 0 END
    END
$$;

CREATE FUNCTION pier_seg_date(v json) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE json_typeof(v)
        WHEN 'string' THEN pier_seg_parse_date(v #>> '{}')
        WHEN 'number' THEN (
            SELECT CASE WHEN abs(x) <= 8.64e15 THEN trunc(x)::bigint END
            FROM (SELECT pier_seg_parse_number(v #>> '{}') AS x) AS n
        )
    END
$$;

CREATE FUNCTION pier_seg_true(v json) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(CASE json_typeof(v)
        WHEN 'boolean' THEN v #>> '{}' = 'true'
        WHEN 'string' THEN v #>> '{}' = 'true'
        WHEN 'number' THEN pier_seg_parse_number(v #>> '{}') = 1
    END, false)
$$;
