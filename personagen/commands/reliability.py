"""`personagen reliability BANK`: Cronbach's alpha, item-total and trait correlations of a bank."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from personagen.errors import PersonagenError
from personagen.io.bank import Bank
from personagen.psychometrics.instruments import Instrument
from personagen.psychometrics.reliability import CorrelationReference, scores_reliability, to_json


def reliability_report(
    bank: str | Path,
    instrument: Instrument | None = None,
    human: CorrelationReference | None = None,
) -> dict[str, Any]:
    """The reliability of a scored bank as plain data (NaN where undefined): `instrument` is
    the bank's own when None (needed for a custom one); `human`, the reference trait
    correlations, or None to report them as unavailable."""
    scores = Bank(bank).read("scores")
    if scores.num_rows == 0:
        raise PersonagenError(f"bank {bank} has no scores yet (run `personagen score` first)")
    try:
        report = scores_reliability(scores, instrument, human)
    except PersonagenError as exc:
        raise PersonagenError(f"bank {bank}: {exc}") from None
    return {"bank": str(bank), **report}


def write_report(report: dict[str, Any], path: Path) -> Path:
    path.write_text(json.dumps(to_json(report), indent=2), encoding="utf-8")
    return path
