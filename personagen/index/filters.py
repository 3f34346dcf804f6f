"""Attribute filters for retrieval: `--where` conditions over bank columns -> a row mask.

Syntax: `COLUMN OP VALUE`, COLUMN a bank column or a dotted struct field (`attributes.gender`,
`quality.overall`), OP one of

    =   equal (`kept=true`, `attributes.gender=female`; text ignores case); `a|b` = any
    !=  not equal (to any of `a|b|c`)
    >=  <=  >  <   numeric comparisons (`neuroticism>=3.5`, `quality.overall>0.6`)
    ~   contains, case-insensitive (`attributes.location~japan|korea`)

Values are read as the column's type (true/false for booleans). On list columns
(`attributes.interests`) a condition holds when any element satisfies it. A null value satisfies
no condition, so `kept=true` leaves out personas the judge has not seen. Conditions are ANDed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from personagen.errors import PersonagenError

_OPS = ("!=", ">=", "<=", "=", "~", ">", "<")
_SPLIT = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(!=|>=|<=|=|~|>|<)\s*(.*?)\s*$", re.S)
_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f"}


@dataclass(frozen=True)
class Condition:
    path: tuple[str, ...]
    op: str
    value: str

    @property
    def column(self) -> str:
        return self.path[0]

    def __str__(self) -> str:
        return f"{'.'.join(self.path)}{self.op}{self.value}"


def parse_where(text: str) -> Condition:
    """`attributes.gender=female` -> Condition; a clear error for anything else."""
    match = _SPLIT.match(text)
    if not match:
        raise PersonagenError(
            f"cannot read filter {text!r}: expected COLUMN OP VALUE with OP one of "
            f"{' '.join(_OPS)} (e.g. kept=true, attributes.location~japan, openness>=3.5)"
        )
    column, op, value = match.groups()
    return Condition(tuple(column.split(".")), op, value)


def parse_filters(
    filters: list[str] | tuple[str, ...] | dict[str, object] | None,
) -> list[Condition]:
    """Where-strings, or a {column: value} dict of equalities, -> conditions."""
    if not filters:
        return []
    if isinstance(filters, dict):
        return [parse_where(f"{k}={_literal(v)}") for k, v in filters.items()]
    return [parse_where(f) for f in filters]


def _literal(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple, set)):
        return "|".join(_literal(v) for v in value)
    return str(value)


def where_mask(table: pa.Table, conditions: list[Condition]) -> np.ndarray:
    """Boolean mask of the rows of `table` that satisfy every condition."""
    mask = np.ones(table.num_rows, bool)
    for condition in conditions:
        mask &= _condition_mask(table, condition)
    return mask


def _condition_mask(table: pa.Table, condition: Condition) -> np.ndarray:
    values = _resolve(table, condition)
    parents = None
    if pa.types.is_list(values.type) or pa.types.is_large_list(values.type):
        parents = pc.list_parent_indices(values).to_numpy()
        values = pc.list_flatten(values)
    hit = _compare(values, condition)
    hit = pc.fill_null(hit, False).to_numpy(zero_copy_only=False)
    if parents is None:
        return hit
    mask = np.zeros(table.num_rows, bool)
    mask[parents[hit]] = True
    return mask


def _resolve(table: pa.Table, condition: Condition) -> pa.ChunkedArray | pa.Array:
    if condition.column not in table.column_names:
        raise PersonagenError(
            f"filter {condition}: no column {condition.column!r} in the bank "
            f"(columns: {', '.join(table.column_names)})"
        )
    values: pa.ChunkedArray | pa.Array = table.column(condition.column).combine_chunks()
    walked = [condition.column]
    for name in condition.path[1:]:
        if not pa.types.is_struct(values.type):
            raise PersonagenError(f"filter {condition}: {'.'.join(walked)} has no fields")
        fields = [values.type.field(i).name for i in range(values.type.num_fields)]
        if name not in fields:
            raise PersonagenError(
                f"filter {condition}: {'.'.join(walked)} has no field {name!r} "
                f"(fields: {', '.join(fields)})"
            )
        values = pc.struct_field(values, name)
        walked.append(name)
    return values


def _compare(values: pa.Array, condition: Condition) -> pa.Array:
    op, kind = condition.op, values.type
    options = condition.value.split("|") if op in ("=", "!=", "~") else [condition.value]
    if op == "~":
        if not pa.types.is_string(kind) and not pa.types.is_large_string(kind):
            raise PersonagenError(f"filter {condition}: ~ needs a text column, not {kind}")
        hits = [pc.match_substring(values, v, ignore_case=True) for v in options]
        return _any(hits)
    typed = [_typed(v, kind, condition) for v in options]
    if op in ("=", "!="):
        if pa.types.is_string(kind) or pa.types.is_large_string(kind):
            values, typed = pc.utf8_lower(values), [str(v).lower() for v in typed]
        hit = pc.is_in(values, value_set=pa.array(typed, values.type))
        return hit if op == "=" else pc.and_(pc.invert(hit), pc.is_valid(values))
    if not (pa.types.is_integer(kind) or pa.types.is_floating(kind)):
        raise PersonagenError(f"filter {condition}: {op} needs a numeric column, not {kind}")
    compare = {">=": pc.greater_equal, "<=": pc.less_equal, ">": pc.greater, "<": pc.less}[op]
    return compare(values, pa.scalar(typed[0], kind))


def _any(hits: list[pa.Array]) -> pa.Array:
    result = hits[0]
    for hit in hits[1:]:
        result = pc.or_(result, hit)
    return result


def _typed(raw: str, kind: pa.DataType, condition: Condition) -> object:
    try:
        if pa.types.is_boolean(kind):
            lowered = raw.lower()
            if lowered not in _TRUE | _FALSE:
                raise ValueError(raw)
            return lowered in _TRUE
        if pa.types.is_integer(kind):
            return int(raw)
        if pa.types.is_floating(kind):
            return float(raw)
        if pa.types.is_string(kind) or pa.types.is_large_string(kind):
            return raw
    except ValueError:
        raise PersonagenError(f"filter {condition}: {raw!r} is not a {kind} value") from None
    raise PersonagenError(f"filter {condition}: cannot compare a {kind} column")
