"""Demographic columns for joint alignment (`--also age,gender`), scaled into trait units.

The cost is squared Euclidean distance over the five traits (1-5 scale). An extra column joins
it on a comparable footing: a numeric column (age) is standardised by the reference and scaled to
the mean trait SD, so being one reference SD off in age costs as much as being one SD off in a
trait; a categorical column (gender) is one-hot coded so that a mismatch costs as much as being
three trait SDs off in one trait: categories are matched unless the pool lacks them (a reference
person is moved across a category only when no persona of it is within about three SDs).
`weight` multiplies both.
"""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from personagen.errors import PersonagenError

NUMERIC = {"age"}
CATEGORICAL = {"gender"}
CATEGORY_SDS = 3.0
"""A category mismatch costs as much as this many trait SDs on one trait."""
_GENDER = {
    "m": "male",
    "male": "male",
    "man": "male",
    "1": "male",
    "f": "female",
    "female": "female",
    "woman": "female",
    "2": "female",
}


def column_values(table: pa.Table, name: str) -> np.ndarray:
    """The `--also` column `name` of a persona or reference table (bank attributes included)."""
    if name in table.column_names:
        values = table.column(name)
    elif "attributes" in table.column_names and name == "age":
        values = pc.struct_field(table.column("attributes"), "age_range")
    elif "attributes" in table.column_names and name == "gender":
        values = pc.struct_field(table.column("attributes"), "gender")
    else:
        raise PersonagenError(f"--also {name}: the table has no {name!r} column")
    if name in NUMERIC:
        return np.array([_age(v) for v in values.to_pylist()], dtype=np.float64)
    return np.array([_gender(v) for v in values.to_pylist()], dtype=object)


def demographic_features(
    persona_cols: dict[str, np.ndarray],
    reference_cols: dict[str, np.ndarray],
    trait_sd: float,
    weight: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """(persona features, reference features) for the named columns, in trait units."""
    p_parts, r_parts = [], []
    scale = trait_sd * weight
    for name, p_values in persona_cols.items():
        r_values = reference_cols[name]
        if name in NUMERIC:
            sd = float(np.nanstd(r_values)) or 1.0
            mean = float(np.nanmean(r_values))
            p_parts.append(((p_values - mean) / sd * scale)[:, None])
            r_parts.append(((r_values - mean) / sd * scale)[:, None])
        elif name in CATEGORICAL:
            levels = sorted({v for v in r_values if v is not None})
            p_parts.append(_one_hot(p_values, levels) * CATEGORY_SDS * scale / np.sqrt(2))
            r_parts.append(_one_hot(r_values, levels) * CATEGORY_SDS * scale / np.sqrt(2))
        else:
            raise PersonagenError(
                f"--also {name}: supported columns are {', '.join(sorted(NUMERIC | CATEGORICAL))}"
            )
    return np.hstack(p_parts), np.hstack(r_parts)


def missing(values: np.ndarray) -> np.ndarray:
    if values.dtype == object:
        return np.array([v is None for v in values], dtype=bool)
    return ~np.isfinite(values)


def _one_hot(values: np.ndarray, levels: list[str]) -> np.ndarray:
    out = np.zeros((values.size, len(levels)))
    index = {level: i for i, level in enumerate(levels)}
    for row, value in enumerate(values):
        if value in index:
            out[row, index[value]] = 1.0
    return out


def _age(value: object) -> float:
    """A number, or the middle of a range such as '25-34' (an open range '65+' adds 5)."""
    if value is None:
        return np.nan
    if isinstance(value, int | float):
        return float(value)
    numbers = [float(n) for n in re.findall(r"\d+(?:\.\d+)?", str(value))]
    if not numbers:
        return np.nan
    if len(numbers) >= 2:
        return (numbers[0] + numbers[1]) / 2
    return numbers[0] + (5.0 if "+" in str(value) else 0.0)


def _gender(value: object) -> str | None:
    if value is None:
        return None
    text = str(value).strip().lower()
    if not text:
        return None
    return _GENDER.get(text, text)
