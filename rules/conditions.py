"""The condition language of the rule files: one condition type, one list of ops, one parser.

A probe rule (`probes.toml`) and a log rule (`logs.toml`) say when they fire the same way: a list
`when = [...]` of conditions that must all hold. A condition is one of

    { field = "status", op = "==", value = 401 }             a field compared with a value
    { field = "total_ms", op = ">", value_field = "slo_ms" }  ... or with another field
    { any = [conditions] }                                    at least one of them holds
    { all = [conditions] }                                    every one holds (inside an any)

`field` names what is tested: a fact of a probe result, a column of a log line, or a value the
engine derives (each rule file lists its own at its top). `op` is one of `OPS` (`==` when left
out). A missing value (a fact the result does not have, None, a null column) satisfies no test
but `null`: no fact, no finding.

Two evaluators give the ops their meaning: `holds` here, over one probe result's facts, and
`rules.log_conditions.select`, vectorised over a block's Arrow columns. Where a rule file's
evaluator cannot run something (a log field holds one value, so `contains_any` has no list to
look in), its `Vocabulary` refuses it when the file is read, naming the file, rule and key.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from monitord.errors import RuleError

OPS: Final = (
    "==", "!=", "<", "<=", ">", ">=", "in", "not_in", "contains_any", "startswith", "matches",
    "not_matches", "empty", "nonempty", "null", "not_null",
)  # fmt: skip
"""Every op, in both rule files: compare (`==` … `>=`); `in`/`not_in` a list of values;
`contains_any` (a list field holds one of the values); `startswith` a text; `matches`/
`not_matches` a regular expression as RE2 reads it (found anywhere in the text); `empty`/
`nonempty` ("", 0, false or an empty list is empty); `null`/`not_null` (the value is missing)."""

UNARY: Final = frozenset({"empty", "nonempty", "null", "not_null"})
"""Ops that take no value."""
LIST_OPS: Final = frozenset({"in", "not_in", "contains_any"})
"""Ops whose value is a list."""
TEXT_OPS: Final = frozenset({"startswith", "matches", "not_matches"})
"""Ops that test text with a text value."""
ORDER_OPS: Final = frozenset({"<", "<=", ">", ">="})
"""Ops that need values with an order."""

MISSING: Final[Any] = object()
"""What a field's lookup answers when the value is not there."""


@dataclass(frozen=True)
class Condition:
    """One test of a field, or a group: `any_of` (one must hold) or `all_of` (all must)."""

    field: str = ""
    op: str = "=="
    value: Any = None
    value_field: str | None = None
    """Compare with this field's value instead of `value`."""
    any_of: tuple[Condition, ...] = ()
    all_of: tuple[Condition, ...] = ()


@dataclass(frozen=True)
class Vocabulary:
    """What the conditions of one rule file may say, where its evaluator sets limits.

    `fields` maps each field a condition may name to its kind ("text", "number" or "bool"),
    so a value of the wrong kind is refused when the file is read; None lets a condition name
    any field (a probe's facts are whatever the probe reports). `refused` maps an op the
    evaluator cannot run to why; `value_field_refused` says why a condition may not compare
    with another field, when it may not.
    """

    fields: Mapping[str, str] | None = None
    fields_are: str = "a field"
    refused: Mapping[str, str] = field(default_factory=dict)
    value_field_refused: str | None = None


def parse_conditions(raw: Any, where: str, vocabulary: Vocabulary) -> tuple[Condition, ...]:
    """A list of condition tables as Conditions. `where` names the file, rule and key
    ("logs.toml: rule x: when"); a RuleError starts with it and names what is wrong."""
    if not isinstance(raw, list):
        raise RuleError(f"{where}: expected a list of conditions, got {raw!r}")
    return tuple(_condition(item, where, vocabulary) for item in raw)


def _condition(raw: Any, where: str, vocabulary: Vocabulary) -> Condition:
    if not isinstance(raw, Mapping):
        raise RuleError(f"{where}: expected a condition {{ field, op, value }}, got {raw!r}")
    for group in ("any", "all"):
        if group in raw:
            if set(raw) != {group}:
                raise RuleError(f"{where}: {group} stands alone in its table, got {sorted(raw)}")
            inner = parse_conditions(raw[group], f"{where}: {group}", vocabulary)
            if not inner:
                raise RuleError(f"{where}: {group} = []: expected at least one condition")
            return Condition(any_of=inner) if group == "any" else Condition(all_of=inner)
    unknown = set(raw) - {"field", "op", "value", "value_field"}
    if unknown:
        raise RuleError(f"{where}: unknown key {sorted(unknown)[0]!r} in a condition")
    name = _field(raw.get("field"), where, vocabulary)
    op = raw.get("op", "==")
    if op not in OPS:
        raise RuleError(f"{where}: op {op!r} is not one of {', '.join(OPS)}")
    if op in vocabulary.refused:
        raise RuleError(f"{where}: op {op!r} cannot be used here: {vocabulary.refused[op]}")
    value, other = raw.get("value"), raw.get("value_field")
    if other is not None:
        if vocabulary.value_field_refused:
            raise RuleError(f"{where}: value_field: {vocabulary.value_field_refused}")
        other = _field(other, f"{where}: value_field", vocabulary)
    given = ("value" in raw) + (other is not None)
    if op in UNARY and given:
        raise RuleError(f"{where}: op {op!r} takes no value")
    if op not in UNARY and given != 1:
        needed = "a 'value'" if vocabulary.value_field_refused else "a 'value' or a 'value_field'"
        raise RuleError(f"{where}: op {op!r} needs {needed}" + (" (not both)" if given else ""))
    if other is None and op not in UNARY:
        _check_value(op, value, where)
        kind = None if vocabulary.fields is None else vocabulary.fields[name]
        if kind is not None:
            _check_kind(name, kind, op, value, where)
    return Condition(field=name, op=op, value=value, value_field=other)


def _field(name: Any, where: str, vocabulary: Vocabulary) -> str:
    if not isinstance(name, str) or not name:
        raise RuleError(f"{where}: field: expected a field's name, got {name!r}")
    if vocabulary.fields is not None and name not in vocabulary.fields:
        raise RuleError(f"{where}: field {name!r} is not {vocabulary.fields_are}")
    return name


def _check_value(op: str, value: Any, where: str) -> None:
    if op in LIST_OPS and not isinstance(value, list):
        raise RuleError(f"{where}: op {op!r} needs a list value, got {value!r}")
    if op in TEXT_OPS and not isinstance(value, str):
        raise RuleError(f"{where}: op {op!r} needs a text value, got {value!r}")
    if op in ("matches", "not_matches"):
        from monitord.regex import re2_error

        problem = re2_error(value)
        if problem is not None:
            raise RuleError(
                f"{where}: {op} {value!r} is not a regular expression RE2 accepts ({problem})"
            )


_KIND_OF_VALUE: Final[dict[type, str]] = {str: "text", int: "number", float: "number", bool: "bool"}


def _check_kind(name: str, kind: str, op: str, value: Any, where: str) -> None:
    # A value of another kind than the field's would fail (or never match) in the middle of an
    # analysis; say so when the file is read.
    if op in TEXT_OPS and kind != "text":
        raise RuleError(f"{where}: op {op!r} tests text, and {name} is a {kind}")
    if op in ORDER_OPS and kind == "bool":
        raise RuleError(f"{where}: op {op!r} needs an order, and {name} is true or false")
    for item in value if isinstance(value, list) else [value]:
        if _KIND_OF_VALUE.get(type(item)) != kind:
            raise RuleError(f"{where}: {name} is a {kind}, and {item!r} is not")


def fields(conditions: Iterable[Condition]) -> list[str]:
    """The fields some conditions read (groups included), each once, in order."""
    names: dict[str, None] = {}
    for c in conditions:
        for name in fields(c.any_of) + fields(c.all_of):
            names[name] = None
        if c.field:
            names[c.field] = None
        if c.value_field:
            names[c.value_field] = None
    return list(names)


# -- the scalar evaluator: one value per field ----------------------------------------------------


def _contains_any(found: Any, value: Any) -> bool:
    return isinstance(found, list | tuple) and any(v in found for v in value)


def _startswith(found: Any, value: Any) -> bool:
    return isinstance(found, str) and found.startswith(value)


def _search(found: Any, pattern: Any) -> bool | None:
    """Whether RE2 finds `pattern` in `found` (as the log engine does); None for a non-text."""
    if not isinstance(found, str):
        return None
    import pyarrow as pa
    import pyarrow.compute as pc

    return bool(pc.match_substring_regex(pa.scalar(found, pa.string()), pattern=pattern).as_py())


SCALAR_OPS: Final[dict[str, Callable[[Any, Any], bool | None]]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "in": lambda found, value: found in value,
    "not_in": lambda found, value: found not in value,
    "contains_any": _contains_any,
    "startswith": _startswith,
    "matches": _search,
    "not_matches": lambda found, value: None if (hit := _search(found, value)) is None else not hit,
    "empty": lambda found, _value: not found,
    "nonempty": lambda found, _value: bool(found),
}
"""Each op over one present value (`null`/`not_null` only ask whether it is present); None or
a TypeError means the value is not of a kind the op tests, and the condition does not hold."""


Test = Callable[[Callable[[str], Any]], bool]
"""A condition made ready to run: given how to look a field's value up, whether it holds."""


def compile_condition(condition: Condition) -> Test:
    """The test of a condition, its decisions (group or field, which op, against what) taken
    once: a rule's conditions are read once and run on every probe result of every round.
    A missing value (MISSING or None) satisfies only `null`."""
    if condition.any_of:
        return _any(tuple(compile_condition(c) for c in condition.any_of))
    if condition.all_of:
        return compile_all(condition.all_of)
    name, value, other = condition.field, condition.value, condition.value_field
    if condition.op in ("null", "not_null"):
        wanted = condition.op == "null"

        def presence(value_of: Callable[[str], Any]) -> bool:
            found = value_of(name)
            return (found is MISSING or found is None) == wanted

        return presence
    op = SCALAR_OPS[condition.op]

    def test(value_of: Callable[[str], Any]) -> bool:
        found = value_of(name)
        if found is MISSING or found is None:
            return False
        against = value
        if other is not None:
            against = value_of(other)
            if against is MISSING or against is None:
                return False
        try:
            return bool(op(found, against))
        except TypeError:  # comparing a number with text: the field is not what the rule expects
            return False

    return test


def compile_all(conditions: Iterable[Condition]) -> Test:
    """One test that holds when every condition holds (a rule's `when`)."""
    members = tuple(compile_condition(c) for c in conditions)

    # Loops, not all()/any() over a generator: making the generator cost more than the few
    # tests it runs, on every result of every round.
    def every(value_of: Callable[[str], Any]) -> bool:
        for member in members:  # noqa: SIM110
            if not member(value_of):
                return False
        return True

    return every


def _any(members: tuple[Test, ...]) -> Test:
    def one(value_of: Callable[[str], Any]) -> bool:
        for member in members:  # noqa: SIM110 (see compile_all)
            if member(value_of):
                return True
        return False

    return one


def holds(condition: Condition, value_of: Callable[[str], Any]) -> bool:
    """Whether a condition holds, `value_of` giving each field's value (MISSING or None when
    there is none); `compile_condition` once for a condition tested many times."""
    return compile_condition(condition)(value_of)
