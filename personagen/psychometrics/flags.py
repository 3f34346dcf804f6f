"""Answer-quality flags per persona: response styles and gaps that make trait scores unreliable.

Flagged personas are kept but marked (`score_flags` in the bank); alignment may exclude them.
All measures work on raw answers (before reverse keying) mapped onto 1-5, so one threshold fits
every scale. Input is (n, items) in the instrument's item order, NaN where an item has no answer.

- `acquiescent` / `nay_saying`: balanced agreement (see `acquiescence_index`) at least
  `acquiescence_max` above / below the scale midpoint.
- `low_variance`: the standard deviation of the answers is below `min_response_sd` (the model
  gives the same answer to everything, or nearly so).
- `missing_items:<trait>`: fewer than `min_items_per_trait` of the trait's items were answered;
  the trait score is then left empty.

Set by the scoring stage (`personagen.stages.score`), not computed from answers alone:

- `failed_items:<n>`: n items got no answer (requests that failed after retries, or answers off
  the scale); their responses are null and the reasons are in `item_errors`.
- `inconsistent:<trait>`: the narrative contradicts the persona's extreme score on the trait
  (the consistency check, `personagen consistency`).
- `predicted`: no LLM answered the items; the traits are predicted from the narrative's
  embedding (`personagen score --mode embedding` or `--surrogate`).
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from personagen.options import Options
from personagen.psychometrics.instruments import Instrument
from personagen.psychometrics.scoring import to_five_point

ACQUIESCENT = "acquiescent"
NAY_SAYING = "nay_saying"
LOW_VARIANCE = "low_variance"
MISSING_ITEMS = "missing_items:"
FAILED_ITEMS = "failed_items:"
INCONSISTENT = "inconsistent:"
PREDICTED = "predicted"


class FlagOptions(Options):
    """Thresholds of the answer-quality flags."""

    min_items_per_trait: int = Field(
        8,
        ge=1,
        description="a persona with fewer answered items for a trait fails (recorded in failures)",
    )
    acquiescence_max: float = Field(
        1.0,
        gt=0,
        description="flag when balanced mean agreement departs from the midpoint by this much "
        "(1-5 units)",
    )
    min_response_sd: float = Field(
        0.5, ge=0, description="flag when the answers' standard deviation is below (1-5 units)"
    )


def _row_mean(values: np.ndarray) -> np.ndarray:
    """Mean of each row over its non-NaN cells; NaN for a row with none."""
    count = np.sum(~np.isnan(values), axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, np.nansum(values, axis=1) / count, np.nan)


def acquiescence_index(responses: np.ndarray, instrument: Instrument) -> np.ndarray:
    """Balanced mean agreement per row, on 1-5 (3 = none; NaN if no trait has both keyings).

    For each trait with answered items of both keyings: the average of the mean raw answer to
    its forward items and the mean raw answer to its reverse items; then the mean over traits.
    Trait content cancels within a trait (a consistent extravert agrees with "I start
    conversations" and disagrees with "I keep in the background"), so only agreement regardless
    of content moves it off the midpoint. The plain mean over all items would not do: the IPIP-50
    has 32 forward and 18 reverse items (neuroticism 8 and 2), so it rises with trait levels.
    """
    raw = to_five_point(responses, instrument)
    signs = np.array([item.keyed for item in instrument.items])
    traits = np.array([item.trait for item in instrument.items])
    per_trait = []
    for trait in instrument.traits:
        forward = _row_mean(raw[:, (traits == trait) & (signs > 0)])
        reverse = _row_mean(raw[:, (traits == trait) & (signs < 0)])
        per_trait.append((forward + reverse) / 2)
    return _row_mean(np.column_stack(per_trait))


def response_sd(responses: np.ndarray, instrument: Instrument) -> np.ndarray:
    """Standard deviation of each row's raw answers on 1-5 (NaN with fewer than two answers)."""
    raw = to_five_point(responses, instrument)
    count = np.sum(~np.isnan(raw), axis=1)
    mean = _row_mean(raw)
    with np.errstate(invalid="ignore", divide="ignore"):
        var = np.nansum((raw - mean[:, None]) ** 2, axis=1) / count
    return np.where(count >= 2, np.sqrt(var), np.nan)


def answered_per_trait(responses: np.ndarray, instrument: Instrument) -> dict[str, np.ndarray]:
    """Trait -> number of its items each row answered."""
    answered = ~np.isnan(np.asarray(responses, dtype=np.float64))
    traits = np.array([item.trait for item in instrument.items])
    return {t: answered[:, traits == t].sum(axis=1) for t in instrument.traits}


def quality_flags(
    responses: np.ndarray, instrument: Instrument, cfg: FlagOptions | None = None
) -> list[list[str]]:
    """Flags of each row, e.g. `["acquiescent", "low_variance", "missing_items:neuroticism"]`."""
    cfg = cfg or FlagOptions()
    responses = np.asarray(responses, dtype=np.float64)
    agreement = acquiescence_index(responses, instrument) - 3.0
    sd = response_sd(responses, instrument)
    answered = answered_per_trait(responses, instrument)
    flags: list[list[str]] = []
    for i in range(responses.shape[0]):
        row = []
        if agreement[i] >= cfg.acquiescence_max:
            row.append(ACQUIESCENT)
        elif agreement[i] <= -cfg.acquiescence_max:
            row.append(NAY_SAYING)
        if sd[i] < cfg.min_response_sd:
            row.append(LOW_VARIANCE)
        row.extend(MISSING_ITEMS + t for t, n in answered.items() if n[i] < cfg.min_items_per_trait)
        flags.append(row)
    return flags
