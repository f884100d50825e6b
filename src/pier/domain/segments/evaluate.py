"""Evaluating a parsed rule for one user in memory (contract §2-§5), what a rule depends on, and
the next instant at which a user's membership can change with no new data."""

from __future__ import annotations

import functools
import operator
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple, cast

import msgspec

from .paths import Every, find
from .rules import (
    NEGATIONS,
    Condition,
    EventWrapper,
    Node,
    Rolling,
    Rule,
    RuleError,
    Wrapper,
    target,
    uses_value,
    walk,
)
from .templates import Call, Literal
from .values import DAY_MS, DateTime, is_true, to_date, to_number, to_text

USER_COLUMNS = ("external_id", "email", "phone", "timezone", "locale")
HORIZON = 86_400_000  # how far ahead a template that moves in steps is followed


def user_document(
    data: Mapping[str, Any],
    *,
    external_id: str | None,
    email: str | None,
    phone: str | None,
    timezone: str | None,
    locale: str | None,
    created_at: int,
) -> dict[str, Any]:
    """§2: the user's traits with the profile columns written over them."""
    doc = dict(data)
    doc.update(
        external_id=external_id,
        email=email,
        phone=phone,
        timezone=timezone,
        locale=locale,
        created_at=DateTime(created_at),
    )
    return doc


def event_document(name: str, created_at: int, data: Mapping[str, Any]) -> dict[str, Any]:
    """§2: the event's data with `name` and `created_at` written over it."""
    doc = dict(data)
    doc.update(name=name, created_at=DateTime(created_at))
    return doc


def _combine(operator: str, results: Iterable[bool]) -> bool:
    if operator == "and":
        return all(results)
    if operator == "or":
        return any(results)
    if operator == "none":
        return not any(results)
    return sum(results) == 1  # xor


Test = Callable[[Mapping[str, Any], Sequence[Mapping[str, Any]]], bool]
FactsTest = Callable[[int, Sequence[Mapping[str, Any]]], bool]  # (Evaluator.member_by_facts)


class Tally(tuple):  # type: ignore[type-arg]
    """A user's events as far as a rule's counts go (Evaluator.tally): for each event wrapper,
    in the order the rule compiles them, the instants (ms, newest first) of the n + 1 most
    recent events it counts, n its frequency's count (1 without one). Every count the rule
    compares, at any instant from now on, follows from them: a rolling window's count up to
    n + 1, and a comparison with n needs no more. Passed to `member` and `next_look` in place
    of the events (Dependencies.tallied says for which rules)."""


class _Counter(NamedTuple):
    """An event wrapper as Evaluator.counted and the tallies see it."""

    name: str
    pointer: str  # the wrapper's (rules.EventWrapper.pointer)
    later: Callable[[Mapping[str, Any]], bool]  # counted now, or may be at a later instant
    keep: int  # instants a Tally keeps for it
    length: int | None  # a rolling window's (ms)


def _combined(operator: str, tests: list[Test]) -> Test:
    """The wrapper of these children's tests (no children: true, whatever the operator)."""
    if not tests:
        return lambda doc, events: True
    if len(tests) == 1 and operator in ("and", "or"):
        return tests[0]
    if operator == "and":

        def test(doc: Mapping[str, Any], events: Sequence[Mapping[str, Any]]) -> bool:
            for t in tests:  # noqa: SIM110 - a loop is faster than all() over a generator
                if not t(doc, events):
                    return False
            return True

    elif operator == "or":

        def test(doc: Mapping[str, Any], events: Sequence[Mapping[str, Any]]) -> bool:
            for t in tests:  # noqa: SIM110 - a loop is faster than any() over a generator
                if t(doc, events):
                    return True
            return False

    else:

        def test(doc: Mapping[str, Any], events: Sequence[Mapping[str, Any]]) -> bool:
            return _combine(operator, (t(doc, events) for t in tests))

    return test


def _compare(op: str, a: Any, b: Any) -> bool:
    if op == "=":
        return bool(a == b)
    if op == "<":
        return bool(a < b)
    if op == "<=":
        return bool(a <= b)
    if op == ">":
        return bool(a > b)
    return bool(a >= b)


def _moving(cond: Condition) -> bool:
    """Whether the condition's rule value renders `now` (so its answer can change with time)."""
    return uses_value(cond) and cond.template is not None and cond.template.uses_now


_COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_TEXT_TESTS: dict[str, Callable[[str, str], bool]] = {
    "=": operator.eq,
    "contains": operator.contains,
    "starts with": str.startswith,
    "ends with": str.endswith,
}


class Evaluator:
    """A rule at one instant `now` (ms): rule values are rendered once, then any number of
    users are evaluated."""

    def __init__(self, rule: Rule, now: int) -> None:
        self.rule = rule
        self.now = now
        self._targets: dict[str, Any] = {}
        self._tests: dict[str, Callable[[Mapping[str, Any]], bool]] = {}  # by pointer
        self._member: Test | None = None
        self._known: Callable[[Mapping[str, Any]], bool | None] | None = None
        self._by_facts: FactsTest | None = None
        self._wrappers: dict[str, Test] = {}  # the event wrappers compiled, by pointer
        self._fact_tests: list[Callable[[Mapping[str, Any]], bool]] = []  # (facts' bits)
        # next_look's rolling windows, (name, length); None when a rule value renders `now`
        nodes = walk(rule.root)
        self._windows: list[tuple[str, int]] | None = [
            (n.name, n.frequency.period.length)
            for n in nodes
            if isinstance(n, EventWrapper)
            and n.frequency is not None
            and isinstance(n.frequency.period, Rolling)
        ]
        if any(isinstance(c, Condition) and _moving(c) for c in nodes):
            self._windows = None
        # one per event wrapper, in the order compile meets them (a Tally's)
        self._counters: list[_Counter] = []
        self._by_name: dict[str, list[tuple[int, Callable[[Mapping[str, Any]], bool]]]] | None = (
            None
        )

    def at(self, now: int) -> Evaluator:
        """The rule at another instant: this evaluator, moved there with all it compiled, when
        only its rolling windows depend on the instant (they read `self.now` when they count);
        a new one when a rule value renders `now`. The caller must be the only user of this
        evaluator (store/common.py keeps those not in use, one per rule)."""
        if self._windows is None:
            return Evaluator(self.rule, now)
        self.now = now
        return self

    def target(self, cond: Condition) -> Any:
        if cond.pointer not in self._targets:
            self._targets[cond.pointer] = target(cond, self.now) if uses_value(cond) else None
        return self._targets[cond.pointer]

    def member(self, user: Mapping[str, Any], events: Sequence[Mapping[str, Any]]) -> bool:
        """Whether the user (user_document) with these events (event_document) is a member.
        Raises RuleError when the stored tree cannot be evaluated at this instant."""
        if self._member is None:
            self._member = self.compile(self.rule.root)
        return self._member(user, events)

    def next_look(self, user: Mapping[str, Any], events: Sequence[Mapping[str, Any]]) -> int | None:
        """`next_look(rule, user, events, now)`, at once when no rule value renders `now`: then
        the first instant after `now` at which an event leaves a rolling window."""
        if self._windows is None:
            assert not isinstance(events, Tally), "a rule that renders now is not tallied"
            return next_look(self.rule, user, events, self.now)
        now, first = self.now, None
        if isinstance(events, Tally):  # only its instants can leave a window and change a count
            for counter, instants in zip(self._counters, events, strict=True):
                if counter.length is not None:
                    for at in instants:
                        t = at + counter.length + 1
                        if t > now and (first is None or t < first):
                            first = t
            return first
        for name, length in self._windows:
            for e in events:
                if e["name"] == name:
                    t = int(e["created_at"]) + length + 1
                    if t > now and (first is None or t < first):
                        first = t
        return first

    def counted(self, event: Mapping[str, Any]) -> bool:
        """Whether some event wrapper counts this event (event_document) now or may count it at
        a later instant: False when each wrapper of its name leaves it out for good (outside a
        fixed period, older than a rolling window's start, which only moves forward, or failing
        children that do not move with time). Adding such an event changes no count at any
        instant from now on, so no membership either (store/common.py skips the user). Raises
        RuleError as `member` does."""
        if self._member is None:
            self._member = self.compile(self.rule.root)
        name = event["name"]
        for counter in self._counters:  # noqa: SIM110 - (as in _combined)
            if counter.name == name and counter.later(event):
                return True
        return False

    def tally(self, events: Sequence[Mapping[str, Any]]) -> Tally:
        """The Tally of a user's events (event documents: all of those the rule counts)."""
        return self.add(Tally(() for _ in self._compiled()), self.hits(events))

    def hits(self, events: Sequence[Mapping[str, Any]]) -> list[tuple[int, int]]:
        """(event wrapper, instant) for each of these events (event documents) and each
        wrapper that counts it now or may at a later instant (see `counted`): a Tally's
        indexes. Empty: adding these events changes no count from now on."""
        if self._by_name is None:
            self._by_name = {}
            for i, counter in enumerate(self._compiled()):
                self._by_name.setdefault(counter.name, []).append((i, counter.later))
        out = []
        for e in events:
            for i, later in self._by_name.get(e["name"], ()):
                if later(e):
                    out.append((i, int(e["created_at"])))
        return out

    def add(self, tally: Tally, hits: list[tuple[int, int]]) -> Tally:
        """The tally with these hits (`hits` of new events) added."""
        if not hits:
            return tally
        out = list(tally)
        counters = self._compiled()
        for i in {i for i, _ in hits}:
            new = [at for j, at in hits if j == i]
            out[i] = tuple(sorted((*out[i], *new), reverse=True)[: counters[i].keep])
        return Tally(out)

    def tallied(self) -> list[tuple[str, int]]:
        """(pointer, instants kept) of each event wrapper, in a Tally's order: what the SQL
        form of a tally selects (store/segments_sql.py, compile_tallies)."""
        return [(c.pointer, c.keep) for c in self._compiled()]

    def _compiled(self) -> list[_Counter]:
        if self._member is None:
            self._member = self.compile(self.rule.root)
        return self._counters

    def compile(self, node: Node) -> Test:
        """The node as a function of (document, events): what `node` computes, with the tree
        walked once here instead of once per user and event (rule values, windows and
        operators are looked up now). The incremental path evaluates many users with it."""
        if isinstance(node, Condition):
            test = self.test(node)
            return lambda doc, events: test(doc)
        if isinstance(node, Wrapper):
            return _combined(node.operator, [self.compile(c) for c in node.children])
        name, frequency = node.name, node.frequency
        lo, hi = None, None  # a fixed period, both ends inclusive
        length: int | None = None  # a rolling window's: it starts at self.now - length
        if frequency is not None:
            period = frequency.period
            if isinstance(period, Rolling):
                length = period.length
            else:
                lo, hi = period.start, period.end
        passes = _combined(node.operator, [self.compile(c) for c in node.children])
        bare = not node.children
        no_events: Sequence[Mapping[str, Any]] = ()
        moving = any(isinstance(c, Condition) and _moving(c) for c in walk(node))

        def later(e: Mapping[str, Any]) -> bool:  # counted now or maybe later (self.counted)
            at = int(e["created_at"])
            start = lo if length is None else self.now - length
            if (start is not None and at < start) or (hi is not None and at > hi):
                return False
            return bare or moving or passes(e, no_events)

        index = len(self._counters)
        keep = 1 if frequency is None else frequency.count + 1
        rolling = (
            frequency.period.length if frequency and isinstance(frequency.period, Rolling) else None
        )
        self._counters.append(_Counter(name, node.pointer, later, keep, rolling))

        def count(doc: Mapping[str, Any], events: Sequence[Mapping[str, Any]]) -> int:
            n = 0
            start = lo if length is None else self.now - length
            if type(events) is Tally:
                for at in events[index]:
                    if (start is None or at >= start) and (hi is None or at <= hi):
                        n += 1
                return n
            for e in events:
                if e["name"] != name:
                    continue
                if start is not None:
                    at = int(e["created_at"])
                    if at < start or (hi is not None and at > hi):
                        continue
                if bare or passes(e, no_events):
                    n += 1
            return n

        op, want = (">=", 1) if frequency is None else (frequency.operator, frequency.count)

        def wrapper(doc: Mapping[str, Any], events: Sequence[Mapping[str, Any]]) -> bool:
            return _compare(op, count(doc, events), want)

        self._wrappers[node.pointer] = wrapper
        return wrapper

    def facts(self, user: Mapping[str, Any]) -> int:
        """The user conditions' answers for this user (user_document), as bits in the order
        the tree has them (outside event wrappers): with them, `member_by_facts` decides from
        the events alone what `member` decides from the document and the events. Raises
        RuleError as `member` does."""
        if self._by_facts is None:
            self._by_facts = self._compile_facts(self.rule.root)
        out = 0
        for bit, test in enumerate(self._fact_tests):
            if test(user):
                out |= 1 << bit
        return out

    def member_by_facts(self, facts: int, events: Sequence[Mapping[str, Any]]) -> bool:
        """`member` of a user whose document gave these `facts` (only user conditions read it:
        an event wrapper's own conditions are on the events)."""
        if self._by_facts is None:
            self._by_facts = self._compile_facts(self.rule.root)
        return self._by_facts(facts, events)

    def _compile_facts(self, node: Node) -> FactsTest:
        """`member_by_facts` of a node, compiled as `compile` does: a user condition is its bit
        of the facts (numbered here, the tests kept for `facts`)."""
        if isinstance(node, Condition):
            mask = 1 << len(self._fact_tests)
            self._fact_tests.append(self.test(node))
            return lambda facts, events: bool(facts & mask)
        if isinstance(node, Wrapper):
            parts = cast(list[Test], [self._compile_facts(c) for c in node.children])
            return cast(FactsTest, _combined(node.operator, parts))
        self._compiled()  # an event wrapper as `member` has it (its conditions are the events')
        test = self._wrappers[node.pointer]
        no_user: Mapping[str, Any] = {}
        return lambda facts, events: test(no_user, events)

    def known(self, user: Mapping[str, Any]) -> bool | None:
        """Whether the user is a member whatever its events are, from its document alone: True
        or False when the user conditions decide the tree (event wrappers taken as unknown, in
        three-valued logic), else None. Raises RuleError as `member` does."""
        if self._known is None:
            self._known = self._compile_known(self.rule.root)
        return self._known(user)

    def _compile_known(self, node: Node) -> Callable[[Mapping[str, Any]], bool | None]:
        """`known` for a node, compiled as `compile` does."""
        if isinstance(node, Condition):
            return self.test(node)
        if isinstance(node, EventWrapper) or not node.children:
            decided = None if isinstance(node, EventWrapper) else True
            return lambda doc: decided
        parts = [self._compile_known(c) for c in node.children]
        op = node.operator

        def known(doc: Mapping[str, Any]) -> bool | None:
            values = [p(doc) for p in parts]
            if op == "xor":
                return None if None in values else values.count(True) == 1
            if op == "and":
                return False if False in values else None if None in values else True
            some = True if True in values else None if None in values else False
            return some if op == "or" or some is None else not some  # none: not or

        return known

    def test(self, cond: Condition) -> Callable[[Mapping[str, Any]], bool]:
        """The condition as a function of a document, computing what `condition` does. The
        usual kind (a path of one key; a string, number or date compared with the rule value)
        is looked up once here: the key, the coercion, the operator, the rendered value."""
        if cond.pointer not in self._tests:
            self._tests[cond.pointer] = self._test(cond)
        return self._tests[cond.pointer]

    def _test(self, cond: Condition) -> Callable[[Mapping[str, Any]], bool]:
        generic = functools.partial(self.condition, cond)
        positive = NEGATIONS.get(cond.operator, cond.operator)
        if len(cond.path) != 1 or type(cond.path[0]) is not str or cond.type == "array":
            return generic
        if cond.type == "string" and positive in _TEXT_TESTS:
            coerce: Callable[[Any], Any] = to_text
            holds = _TEXT_TESTS[positive]
        elif cond.type in ("number", "date") and positive in _COMPARISONS:
            coerce = to_number if cond.type == "number" else to_date
            holds = _COMPARISONS[positive]
        else:
            return generic
        try:
            want = self.target(cond)
        except RuleError:  # fails when evaluated, as `condition` does
            return generic
        key, negated = cond.path[0], positive != cond.operator

        def test(doc: Mapping[str, Any]) -> bool:
            if type(doc) is not dict:
                return generic(doc)
            value = doc.get(key)
            if value is None:
                return negated
            x = coerce(value)
            return (x is not None and holds(x, want)) is not negated

        return test

    def condition(self, cond: Condition, doc: Mapping[str, Any]) -> bool:
        values = [v for v in find(doc, cond.path) if v is not None]
        kind, op = cond.type, cond.operator
        if kind == "boolean":
            some_true = any(is_true(v) for v in values)
            return bool(some_true == self.target(cond)) is (op == "=")
        if kind == "array":
            arrays = [v for v in values if isinstance(v, list)]
            if op == "is set":
                return bool(arrays)
            if op == "is not set":
                return not arrays
            if op == "empty":
                return not any(arrays)
            want = self.target(cond)
            return any(to_text(x) == want for a in arrays for x in a if x is not None)
        positive = NEGATIONS.get(op, op)
        result = self.some(cond, positive, values)
        return not result if positive != op else result

    def some(self, cond: Condition, op: str, values: list[Any]) -> bool:
        """Whether some found value satisfies the positive operator `op`."""
        if cond.type == "string":
            texts = [t for t in map(to_text, values) if t is not None]
            if op == "is set":
                return bool(texts)
            if op == "is not set":
                return not texts
            if op == "empty":
                return all(t == "" for t in texts)
            want = self.target(cond)
            test: Callable[[str], bool] = {
                "=": lambda t: t == want,
                "contains": lambda t: want in t,
                "starts with": lambda t: t.startswith(want),
                "ends with": lambda t: t.endswith(want),
            }[op]
            return any(test(t) for t in texts)
        coerce = to_number if cond.type == "number" else to_date
        found = [x for x in map(coerce, values) if x is not None]
        if op == "is set":
            return bool(found)
        if op == "is not set":
            return not found
        want = self.target(cond)
        if op == "is same day":
            day = want - want % DAY_MS
            return any(day <= x < day + DAY_MS for x in found)
        return any(_compare(op, x, want) for x in found)


def member(
    rule: Rule, user: Mapping[str, Any], events: Sequence[Mapping[str, Any]], now: int
) -> bool:
    """§2: `evaluate(tree, user, events, now)`. Raises RuleError (naming the node) when a stored
    tree cannot be evaluated at `now`."""
    return Evaluator(rule, now).member(user, events)


# -- what a rule depends on ------------------------------------------------------------------


class Dependencies(msgspec.Struct, frozen=True):
    """What can change a rule's answer for a user.

    - `events`: names of the events its event wrappers count (names are exact: the contract
      has no wildcard event condition);
    - `profile_keys`: first keys of the user document its user conditions read; None when a
      path starts with [*] (any key);
    - `time`: whether the answer can change with no new data (a rolling period, or a rule value
      that renders `now`): see `next_change`;
    - `rising`: the names of `events` whose new events can only turn the rule from false to
      true, at every instant: each wrapper counting them is "at least n" (`>=`, `>`, or no
      frequency) and sits under `and` / `or` wrappers only. A member stays a member when
      such events are added (store/common.py skips evaluating it);
    - `fading`: time can take users out of the list but never bring one in (every name is
      rising and no rule value renders `now`: time only lets events leave rolling windows),
      so a non-member stays one until new data comes: it is never due;
    - `tallied`: a user's events can stand as a Tally for it (no rule value renders `now`,
      no event wrapper inside another), so that a new event costs an update of the tally
      rather than a read of the user's events (store/list_cache.py)."""

    events: frozenset[str]
    profile_keys: frozenset[str] | None
    time: bool
    rising: frozenset[str] = frozenset()
    fading: bool = False
    tallied: bool = False


def dependencies(rule: Rule) -> Dependencies:
    events: set[str] = set()
    falling: set[str] = set()  # counted somewhere that more events can turn false
    keys: set[str] | None = set()
    time = templates = nested = False

    def visit(node: Node, in_event: bool, positive: bool = True) -> None:
        nonlocal keys, time, templates, nested
        if isinstance(node, Condition):
            if uses_value(node) and node.template is not None and node.template.uses_now:
                time = templates = True
            if not in_event and keys is not None and node.path:
                first = node.path[0]
                if isinstance(first, Every):
                    keys = None
                elif isinstance(first, str):
                    keys.add(first)
            return
        if isinstance(node, EventWrapper):
            events.add(node.name)
            nested = nested or in_event
            if node.frequency is not None and isinstance(node.frequency.period, Rolling):
                time = True
            if not (
                positive and (node.frequency is None or node.frequency.operator in (">=", ">"))
            ):
                falling.add(node.name)
        positive = positive and node.operator in ("and", "or")
        for child in node.children:
            visit(child, in_event or isinstance(node, EventWrapper), positive)

    visit(rule.root, False)
    profile = None if keys is None else frozenset(keys)
    fading = not (falling or templates)
    tallied = not (templates or nested)
    return Dependencies(
        frozenset(events), profile, time, frozenset(events - falling), fading, tallied
    )


# -- when membership can change with no new data ----------------------------------------------


def next_change(
    rule: Rule, user: Mapping[str, Any], events: Sequence[Mapping[str, Any]], now: int
) -> int | None:
    """The next instant after `now` at which the user's membership changes with no new data,
    or None when it cannot. Membership is the same at every instant in [now, result).

    Exact for rolling periods (an event leaves a window of length L at created_at + L + 1 ms)
    and for date rules whose value is `now` moved by addDate/subDate/nextDate/dateFormat (their
    value grows with time: the instants where it passes each found date are found by
    bisection): membership is evaluated at each such instant, in order. Any other rule value
    that renders `now` gives the next instant its text changes, looked for up to 24 h ahead (or
    now + 24 h): there membership may change, and must be looked at again."""
    exact, limit = _candidates(rule, user, events, now)
    now_member = member(rule, user, events, now)
    for t in sorted(t for t in exact if t > now):
        if limit is not None and t >= limit:
            break
        if member(rule, user, events, t) != now_member:
            return t
    return limit


def next_look(
    rule: Rule, user: Mapping[str, Any], events: Sequence[Mapping[str, Any]], now: int
) -> int | None:
    """The first instant after `now` at which the user's membership *may* change with no new
    data (the first of next_change's candidates, none of them evaluated), or None when it
    cannot: membership is the same at every instant in [now, result). Cheaper than
    next_change by the evaluations it skips; the caller evaluates there and looks again."""
    exact, limit = _candidates(rule, user, events, now)
    first = min((t for t in exact if t > now), default=None)
    if first is None or (limit is not None and limit < first):
        return limit
    return first


def _candidates(
    rule: Rule, user: Mapping[str, Any], events: Sequence[Mapping[str, Any]], now: int
) -> tuple[set[int], int | None]:
    """The instants where membership can change (exact), and the first instant a moving
    template must be looked at again (or None)."""
    exact: set[int] = set()
    recheck: list[int] = []
    for node in walk(rule.root):
        if isinstance(node, EventWrapper):
            period = node.frequency.period if node.frequency is not None else None
            mine = [e for e in events if e["name"] == node.name]
            if isinstance(period, Rolling):
                exact.update(int(e["created_at"]) + period.length + 1 for e in mine)
            for child in node.children:
                for cond in walk(child):
                    if isinstance(cond, Condition):
                        _moves(cond, mine, now, exact, recheck)
    for node in _outside_events(rule.root):
        _moves(node, [user], now, exact, recheck)
    return exact, min(recheck, default=None)


def _outside_events(node: Node) -> Iterable[Condition]:
    if isinstance(node, Condition):
        yield node
    elif isinstance(node, Wrapper):
        for child in node.children:
            yield from _outside_events(child)


def _moves(
    cond: Condition,
    docs: Sequence[Mapping[str, Any]],
    now: int,
    exact: set[int],
    recheck: list[int],
) -> None:
    """Add the instants after `now` at which this condition may change for these documents."""
    template = cond.template
    if template is None or not uses_value(cond) or not template.uses_now:
        return
    if cond.type == "date" and _grows(template):
        thresholds: set[int] = set()
        for doc in docs:
            for v in find(doc, cond.path):
                ms = to_date(v)
                if ms is None:
                    continue
                if cond.operator == "is same day":
                    day = ms - ms % DAY_MS
                    thresholds |= {day, day + DAY_MS}
                else:
                    thresholds.add(ms)
        for x in thresholds:
            for strict in (False, True):
                t = _first(functools.partial(_passes, cond, x=x, strict=strict), now)
                if t is not None:
                    exact.add(t)
        return
    rendered = template.render(now)
    t = _first(lambda t: template.render(t) != rendered, now, HORIZON)
    recheck.append(t if t is not None else now + HORIZON)


def _passes(cond: Condition, t: int, x: int, strict: bool) -> bool:
    value = target(cond, t)
    return bool(value > x) if strict else bool(value >= x)


def _first(test: Callable[[int], bool], now: int, horizon: int | None = None) -> int | None:
    """The first instant t > now where `test` holds, for a test that stays true once true
    (within the horizon); None if none."""
    if test(now):
        return None  # already past: no later transition
    step, limit = 1000, horizon if horizon is not None else 400 * 365 * DAY_MS
    lo = now  # test(lo) is false, or lo is now
    while not test(now + step):
        lo = now + step
        if step >= limit:
            return None
        step = min(step * 2, limit)
    hi = now + step
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if test(mid):
            hi = mid
        else:
            lo = mid
    return hi


_ORDERED = re.compile(r"yyyy-MM-dd(?:[T ]HH:mm(?::ss(?:\.SSS)?)?Z?)?")
_GROWING = {"now", "addDate", "subDate", "subtractDate", "nextDate", "dateFormat"}


def _grows(template: Any) -> bool:
    """Whether a date template's instant never decreases as `now` grows: one mustache that
    moves `now` by fixed amounts (and formats it in UTC)."""
    parts = [p for p in template.parts if not (isinstance(p, str) and not p.strip())]
    if len(parts) != 1 or isinstance(parts[0], str):
        return False

    def grows(expr: Any) -> bool:
        if isinstance(expr, Literal):
            return True  # "now" or a fixed date
        if not isinstance(expr, Call) or expr.helper not in _GROWING:
            return False
        if expr.helper in ("now", "dateFormat"):
            fmt = expr.args[0 if expr.helper == "now" else 1 :][:1]
            if len(expr.args) > (1 if expr.helper == "now" else 2):
                return False  # a time zone: local time read as UTC jumps back in autumn
            if fmt and not (isinstance(fmt[0], Literal) and _ORDERED.fullmatch(str(fmt[0].value))):
                return False
            if expr.helper == "now":
                return True
        first, rest = (expr.args[0], expr.args[1:]) if expr.args else (None, ())
        return grows(first) and all(isinstance(a, Literal) for a in rest)

    return grows(parts[0].expr)
