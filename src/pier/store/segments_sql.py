"""A rule tree as one SQL query: the ids of a project's users who are members at `now`
(docs/segments-contract.md), for the backfill of a list. Written once, spelled per dialect.

- A condition tests the values its path finds: a path without `[*]` finds at most one value (a
  scalar expression), one with `[*]` a set (a subquery over the JSON elements). "Some value
  satisfies" is `(test) IS TRUE` or `EXISTS (...)`, so every condition is true or false, never
  NULL, and a negation is plain NOT (§4: negations are exact complements).
- Found values are JSON (text on SQLite, `json` on PostgreSQL), and are coerced by four SQL
  functions, `pier_seg_text`, `pier_seg_number`, `pier_seg_date` and `pier_seg_true`: on SQLite
  they are the domain's own coercions (domain/segments/values.py), registered on each
  connection; on PostgreSQL the same rules in SQL (migrations/postgres/0005_segment_functions.sql).
- An event wrapper is a count per user from one GROUP BY over the project's events, LEFT JOINed
  to the users, so users with no qualifying event count 0 (§9 Q12).
- Rule values (templates rendered at `now`) and rolling windows are computed here, in Python,
  and bound as parameters: matching is literal (§9 Q17).
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable
from typing import Any

import msgspec

from ..domain.segments import Condition, Evaluator, EventWrapper, Node, Rolling, Rule, Wrapper
from ..domain.segments.paths import Every, Path
from ..domain.segments.rules import NEGATIONS, walk
from ..domain.segments.values import DAY_MS, is_true, to_date, to_number, to_text
from .queries import Dialect

USER_COLUMNS = ("external_id", "email", "phone", "timezone", "locale")
_PARAM = re.compile(r"\$(\d+)")
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_ .\-:@$#]*")  # SQLite reads these keys as labels


class _Spelling:
    """What the two dialects spell differently in a compiled rule."""

    def __init__(self, dialect: Dialect) -> None:
        self.pg = dialect.name == "postgres"

    def cast(self, kind: str) -> str:
        return f"::{kind}" if self.pg else ""

    def typeof(self, v: str) -> str:
        """The JSON type of a JSON value: 'object', 'array', ... (SQLite names kept apart)."""
        return f"json_typeof({v})" if self.pg else f"json_type({v})"

    def is_object(self, v: str) -> str:
        return f"{self.typeof(v)} = 'object'"

    def is_array(self, v: str) -> str:
        return f"{self.typeof(v)} = 'array'"

    def to_json(self, text: str) -> str:
        """A text column as a JSON string (NULL stays no value)."""
        return f"to_json({text})" if self.pg else f"json_quote({text})"

    def position(self, text: str, part: str) -> str:
        return f"strpos({text}, {part})" if self.pg else f"instr({text}, {part})"

    def each(self, v: str, alias: str, objects: bool = True) -> tuple[str, str]:
        """A FROM item over the elements of an array (and member values of an object) and the
        JSON of one of its rows."""
        if self.pg:
            arrays = (
                f"SELECT value FROM json_array_elements(CASE WHEN {self.is_array(v)} THEN {v} END)"
            )
            if objects:
                arrays += (
                    f" UNION ALL SELECT value FROM json_each(CASE WHEN {self.is_object(v)}"
                    f" THEN {v} END)"
                )
            return f"LATERAL ({arrays}) AS {alias}(v)", f"{alias}.v"
        kinds = "('array', 'object')" if objects else "('array')"
        item = f"json_each(CASE WHEN json_type({v}) IN {kinds} THEN {v} END) AS {alias}"
        return item, self.row_json(alias)

    def row_json(self, alias: str) -> str:
        """SQLite: the JSON text of a json_each row (numbers to 17 digits: read back exact)."""
        return (
            f"CASE {alias}.type WHEN 'text' THEN json_quote({alias}.value)"
            f" WHEN 'real' THEN printf('%!.17g', {alias}.value)"
            f" WHEN 'integer' THEN CAST({alias}.value AS TEXT)"
            f" WHEN 'true' THEN 'true' WHEN 'false' THEN 'false' WHEN 'null' THEN 'null'"
            f" ELSE {alias}.value END"
        )


class _Compiler:
    def __init__(self, rule: Rule, dialect: Dialect, now: int) -> None:
        self.s = _Spelling(dialect)
        self.evaluator = Evaluator(rule, now)  # renders and coerces each rule value once
        self.now = now
        self.params: list[Any] = []
        self.joins: list[str] = []
        self.aliases = 0
        self.some_users = False  # only the users of list parameter $2
        self.ids: tuple[str, str | None] | None = None  # only ids after, up to (parameters)

    def in_range(self, column: str) -> str:
        """`column` (a user id) within `ids`."""
        assert self.ids is not None
        after, upto = self.ids
        return f"{column} > {after}" + (f" AND {column} <= {upto}" if upto is not None else "")

    def param(self, value: Any, kind: str) -> str:
        self.params.append(value)
        return f"${len(self.params)}{self.s.cast(kind)}"

    def alias(self, prefix: str) -> str:
        self.aliases += 1
        return f"{prefix}{self.aliases}"

    # -- the tree --------------------------------------------------------------------------
    def node(self, node: Node, doc: str) -> str:
        """A two-valued SQL condition; `doc` is "u" (the user) or "e" (an event)."""
        if isinstance(node, Condition):
            return self.condition(node, doc)
        if isinstance(node, Wrapper):
            return self.combine(node.operator, [self.node(c, doc) for c in node.children])
        return self.event_wrapper(node)

    @staticmethod
    def combine(operator: str, parts: list[str]) -> str:
        if not parts:
            return "TRUE"
        if operator == "and":
            return "(" + " AND ".join(parts) + ")"
        if operator == "or":
            return "(" + " OR ".join(parts) + ")"
        if operator == "none":
            return "NOT (" + " OR ".join(parts) + ")"
        return "(" + " + ".join(f"CASE WHEN {p} THEN 1 ELSE 0 END" for p in parts) + ") = 1"

    def event_wrapper(self, node: EventWrapper) -> str:
        where = self.events_of(node)
        alias = self.alias("c")
        self.joins.append(
            f" LEFT JOIN (SELECT e.user_id, count(*) AS n FROM events e WHERE"
            f" {' AND '.join(where)} GROUP BY e.user_id) {alias} ON {alias}.user_id = u.id"
        )
        frequency = node.frequency
        op, count = (">=", 1) if frequency is None else (frequency.operator, frequency.count)
        return f"COALESCE({alias}.n, 0) {op} {self.param(count, 'bigint')}"

    def events_of(self, node: EventWrapper) -> list[str]:
        """The conditions (ANDed) on the events `e` an event wrapper counts."""
        where = [f"e.project_id = $1 AND e.name = {self.param(node.name, 'text')}"]
        if self.some_users:
            where.append("e.user_id {any[2]}")
        if self.ids is not None:
            where.append(self.in_range("e.user_id"))
        frequency = node.frequency
        if frequency is not None:
            period = frequency.period
            if isinstance(period, Rolling):
                where.append(f"e.created_at >= {self.param(self.now - period.length, 'bigint')}")
            else:
                where.append(f"e.created_at >= {self.param(period.start, 'bigint')}")
                if period.end is not None:
                    where.append(f"e.created_at <= {self.param(period.end, 'bigint')}")
        if node.children:
            where.append(self.combine(node.operator, [self.node(c, "e") for c in node.children]))
        return where

    # -- found values ----------------------------------------------------------------------
    def some(self, path: Path, doc: str, test: Callable[[str, str], str]) -> str:
        """Whether some value the path finds in the document passes `test(value, kind)`;
        kind is "json", "text" (a text column) or "ms" (a created_at column)."""
        columns = USER_COLUMNS if doc == "u" else ("name",)
        if not path:
            return "FALSE"  # the document itself: an object, no value of any type
        first, rest = path[0], path[1:]
        parts: list[str] = []
        if isinstance(first, str) and (first in columns or first == "created_at"):
            if not rest:
                kind = "ms" if first == "created_at" else "text"
                parts.append(f"({test(f'{doc}.{first}', kind)}) IS TRUE")
        elif isinstance(first, Every):
            if not rest:
                for column in (*columns, "created_at"):
                    kind = "ms" if column == "created_at" else "text"
                    parts.append(f"({test(f'{doc}.{column}', kind)}) IS TRUE")
            hidden = ", ".join(f"'{c}'" for c in (*columns, "created_at"))
            alias = self.alias("m")
            if self.s.pg:
                item, value = f"json_each({doc}.data) AS {alias}", f"{alias}.value"
            else:
                item, value = f"json_each({doc}.data) AS {alias}", self.s.row_json(alias)
            parts.append(
                self.json_values(value, rest, test, [item], [f"{alias}.key NOT IN ({hidden})"])
            )
        elif isinstance(first, str):
            parts.append(self.json_values(f"{doc}.data", path, test, [], []))
        return "(" + " OR ".join(parts) + ")" if parts else "FALSE"

    def json_values(
        self,
        value: str,
        steps: Path,
        test: Callable[[str, str], str],
        items: list[str],
        where: list[str],
    ) -> str:
        for step in steps:
            if isinstance(step, Every):
                item, value = self.s.each(value, self.alias("a"))
                items.append(item)
            else:
                value = self.step(value, step)
        check = test(value, "json")
        if not items:
            return f"({check}) IS TRUE"
        return f"EXISTS (SELECT 1 FROM {', '.join(items)} WHERE {' AND '.join([*where, check])})"

    def step(self, v: str, step: str | int) -> str:
        """The value one step finds in JSON value v, or NULL: `->` finds nothing for a key of a
        non-object or an index of a non-array, on both backends."""
        if isinstance(step, int):
            return f"({v} -> {step})" if self.s.pg else f"({v} -> '$[{step}]')"
        if self.s.pg:
            return f"({v} -> {self.param(step, 'text')})"
        if _PLAIN_KEY.fullmatch(step):
            label = '$."' + step + '"'
            return f"({v} -> {self.param(label, 'text')})"
        # SQLite compares a label with the key as written (escapes and all): other keys are
        # compared unescaped, as json_each gives them
        alias = self.alias("k")
        key = self.param(step, "text")
        return (
            f"(SELECT {self.s.row_json(alias)} FROM json_each({v}) AS {alias}"
            f" WHERE {alias}.key = {key})"
        )

    # -- conditions ------------------------------------------------------------------------
    # A found value is JSON (kind "json"), a text column ("text") or a created_at column
    # ("ms"); these give its coercion (§4), NULL for no value.
    def text(self, v: str, kind: str) -> str:
        return {"json": f"pier_seg_text({v})", "text": v, "ms": "NULL"}[kind]

    def number(self, v: str, kind: str) -> str:
        if kind == "ms":
            return "NULL"
        return f"pier_seg_number({v if kind == 'json' else self.s.to_json(v)})"

    def date(self, v: str, kind: str) -> str:
        if kind == "ms":
            return v
        return f"pier_seg_date({v if kind == 'json' else self.s.to_json(v)})"

    def truth(self, v: str, kind: str) -> str:
        if kind == "ms":
            return "FALSE"
        return f"pier_seg_true({v if kind == 'json' else self.s.to_json(v)})"

    def condition(self, cond: Condition, doc: str) -> str:
        op, want = cond.operator, self.evaluator.target(cond)
        if cond.type == "boolean":
            truth = self.some(cond.path, doc, self.truth)
            return truth if (op == "=") == want else f"NOT {truth}"
        if cond.type == "array":
            return self.array(cond, doc, want)
        positive = NEGATIONS.get(op, op)
        if positive in ("is not set", "empty"):
            result = self.positive(
                cond, doc, "is set" if positive == "is not set" else "non-empty", want
            )
            return f"NOT {result}"
        result = self.positive(cond, doc, positive, want)
        return f"NOT {result}" if positive != op else result

    def positive(self, cond: Condition, doc: str, op: str, want: Any) -> str:
        if cond.type == "string":
            if op == "is set":
                return self.some(cond.path, doc, lambda v, k: f"{self.text(v, k)} IS NOT NULL")
            if op == "non-empty":
                return self.some(cond.path, doc, lambda v, k: f"{self.text(v, k)} <> ''")
            r = self.param(want, "text")
            if op == "=":
                return self.some(cond.path, doc, lambda v, k: f"{self.text(v, k)} = {r}")
            if op == "contains":
                return self.some(
                    cond.path, doc, lambda v, k: f"{self.s.position(self.text(v, k), r)} > 0"
                )
            n = self.param(len(want), "int")
            if op == "starts with":
                return self.some(
                    cond.path, doc, lambda v, k: f"substr({self.text(v, k)}, 1, {n}) = {r}"
                )
            return self.some(  # ends with
                cond.path,
                doc,
                lambda v, k: (
                    f"(SELECT length(t) >= {n} AND substr(t, length(t) - {n} + 1) = {r}"
                    f" FROM (SELECT {self.text(v, k)} AS t) AS x)"
                ),
            )
        coerce = self.number if cond.type == "number" else self.date
        if op == "is set":
            return self.some(cond.path, doc, lambda v, k: f"{coerce(v, k)} IS NOT NULL")
        kind = "float8" if cond.type == "number" else "bigint"
        if op == "is same day":
            day = want - want % DAY_MS
            lo, hi = self.param(day, "bigint"), self.param(day + DAY_MS, "bigint")
            return self.some(
                cond.path,
                doc,
                lambda v, k: (
                    f"(SELECT x >= {lo} AND x < {hi} FROM (SELECT {coerce(v, k)} AS x) AS d)"
                ),
            )
        r = self.param(want, kind)
        return self.some(cond.path, doc, lambda v, k: f"{coerce(v, k)} {op} {r}")

    def array(self, cond: Condition, doc: str, want: Any) -> str:
        s = self.s

        def arrays(v: str, k: str) -> str:
            return f"{s.is_array(v)}" if k == "json" else "FALSE"

        op = cond.operator
        if op in ("is set", "is not set"):
            found = self.some(cond.path, doc, arrays)
            return found if op == "is set" else f"NOT {found}"
        if op == "empty":
            found = self.some(
                cond.path,
                doc,
                lambda v, k: (
                    "FALSE"
                    if k != "json"
                    else f"(CASE WHEN {s.is_array(v)} THEN json_array_length({v}) END) > 0"
                ),
            )
            return f"NOT {found}"
        r = self.param(want, "text")

        def contains(v: str, k: str) -> str:
            if k != "json":
                return "FALSE"
            item, element = s.each(v, self.alias("x"), objects=False)
            return f"EXISTS (SELECT 1 FROM {item} WHERE pier_seg_text({element}) = {r})"

        return self.some(cond.path, doc, contains)


def compile_members(
    rule: Rule,
    dialect: Dialect,
    project_id: int,
    now: int,
    user_ids: list[int] | None = None,
    ids: tuple[int, int | None] | None = None,
) -> tuple[str, list[Any]]:
    """The query selecting the ids of the members of a project at `now` (ms), among `user_ids`
    when given, or among the users whose id is in `ids` (after, up to: the range of a chunk of
    a backfill; None: no end), and its parameters. Each event wrapper then reads only the
    events of those users. Raises RuleError when a rule value cannot be rendered at `now`."""
    compiler = _Compiler(rule, dialect, now)
    compiler.param(project_id, "bigint")  # $1
    used = {1}
    only = ""
    if user_ids is not None:
        compiler.params.append(dialect.array(list(user_ids)))  # $2
        compiler.some_users, only, used = True, " AND u.id {any[2]}", {1, 2}
    elif ids is not None:
        after, upto = ids
        compiler.ids = (
            compiler.param(after, "bigint"),
            None if upto is None else compiler.param(upto, "bigint"),
        )
        only = " AND " + compiler.in_range("u.id")
    where = compiler.node(rule.root, "u")
    sql = f"SELECT u.id FROM users u{''.join(compiler.joins)} WHERE u.project_id = $1{only}"
    sql += f" AND {where}"
    return _rendered(compiler, dialect, sql, used)


def compile_tallies(
    rule: Rule, dialect: Dialect, project_id: int, now: int, ids: tuple[int, int | None]
) -> tuple[str, list[Any]]:
    """The query selecting the users' tallies (Evaluator.tally; for a rule whose dependencies
    say `tallied`) among the users whose id is in `ids` (after, up to), at `now`, as rows
    (user id, wrapper's index in the tally, instant): for each event wrapper, the n + 1 most
    recent events it counts of each user, n its frequency's count (1 without one). The events
    are those the members' query counts; the backfill gives them to the lists' cache."""
    compiler = _Compiler(rule, dialect, now)
    compiler.param(project_id, "bigint")  # $1
    after, upto = ids
    compiler.ids = (
        compiler.param(after, "bigint"),
        None if upto is None else compiler.param(upto, "bigint"),
    )
    wrappers = {n.pointer: n for n in walk(rule.root) if isinstance(n, EventWrapper)}
    parts = []
    for index, (pointer, keep) in enumerate(compiler.evaluator.tallied()):
        where = " AND ".join(compiler.events_of(wrappers[pointer]))
        parts.append(
            f"SELECT user_id, {index} AS w, created_at FROM (SELECT e.user_id, e.created_at,"
            " row_number() OVER (PARTITION BY e.user_id ORDER BY e.created_at DESC) AS r"
            f" FROM events e WHERE {where}) AS t{index} WHERE r <= {keep}"
        )
    sql = " UNION ALL ".join(parts) if parts else "SELECT 0, 0, 0 WHERE FALSE"
    return _rendered(compiler, dialect, sql, {1})


def _rendered(
    compiler: _Compiler, dialect: Dialect, sql: str, used: set[int]
) -> tuple[str, list[Any]]:
    """The query with its parameters numbered in order, and their values: a value is bound
    before it is known whether a path finds anything, so only those used are kept."""
    ordered = sorted(used | {int(n) for n in _PARAM.findall(sql)})
    number = {old: new for new, old in enumerate(ordered, 1)}
    sql = _PARAM.sub(lambda m: f"${number[int(m[1])]}", sql)
    params = [compiler.params[old - 1] for old in ordered]
    return dialect.render(sql), params  # no braces but {any[2]}: every value is a parameter


# -- SQLite: the coercions as SQL functions ----------------------------------------------------


def _decoded(j: str | None) -> Any:
    if j is None:
        return None
    try:
        return msgspec.json.decode(j)
    except msgspec.DecodeError:
        return None  # e.g. a number out of range, printed as Inf


def register_sqlite_functions(conn: sqlite3.Connection) -> None:
    """pier_seg_text/number/date/true: the domain's coercions of a JSON text (§4)."""
    conn.create_function("pier_seg_text", 1, lambda j: to_text(_decoded(j)), deterministic=True)
    conn.create_function("pier_seg_number", 1, lambda j: to_number(_decoded(j)), deterministic=True)
    conn.create_function("pier_seg_date", 1, lambda j: to_date(_decoded(j)), deterministic=True)
    conn.create_function(
        "pier_seg_true", 1, lambda j: j is not None and is_true(_decoded(j)), deterministic=True
    )
