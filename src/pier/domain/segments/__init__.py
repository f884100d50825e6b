"""Rule-based segments (docs/segments-contract.md): parse and check a Parcelvoy rule tree,
evaluate it for one user in memory, and say what it depends on. No storage here: the SQL form
of a rule is store/segments_sql.py."""

from .evaluate import (
    Dependencies,
    Evaluator,
    dependencies,
    event_document,
    member,
    next_change,
    next_look,
    user_document,
)
from .rules import (
    MAX_DEPTH,
    MAX_NODES,
    Condition,
    EventWrapper,
    Fixed,
    Frequency,
    Node,
    Rolling,
    Rule,
    RuleError,
    RuleInvalid,
    Wrapper,
    parse_rule,
    target,
)
from .words import path_words, rule_words

__all__ = [
    "MAX_DEPTH",
    "MAX_NODES",
    "Condition",
    "Dependencies",
    "EventWrapper",
    "Evaluator",
    "Fixed",
    "Frequency",
    "Node",
    "Rolling",
    "Rule",
    "RuleError",
    "RuleInvalid",
    "Wrapper",
    "dependencies",
    "event_document",
    "member",
    "next_change",
    "next_look",
    "parse_rule",
    "path_words",
    "rule_words",
    "target",
    "user_document",
]
