"""`personagen consistency BANK`: check extreme trait scores against the narratives.

Every persona with an extreme trait (`personagen.stages.consistency.extreme_claims`) and no
verdict yet (nor a failed check) is checked by the judge LLM; then the `inconsistent:<trait>`
flags of the bank's scores on `score.instrument` are brought up to date from the latest
verdicts. Also run by
`personagen score --check-consistency` (`score.consistency`).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from personagen import TRAITS
from personagen.commands.render import llm_rows
from personagen.config import Config
from personagen.errors import PersonagenError
from personagen.io.bank import KEY, Bank, scores_of
from personagen.psychometrics.instruments import get_instrument
from personagen.runtime.context import RunContext, run_stage
from personagen.runtime.summary import Summary
from personagen.stages.consistency import (
    CONTRADICTED,
    STAGE,
    consistency_stage,
    extreme_claims,
    flags_with_verdicts,
)


def check_consistency(cfg: Config, bank: str | Path) -> Summary:
    """Check the extreme personas not checked yet, then flag."""
    ctx = RunContext(cfg, bank, STAGE)
    if not ctx.bank.has("scores"):
        raise PersonagenError(
            f"bank {ctx.bank.path} has no scores yet (run `personagen score` first)"
        )
    counts = check_pending(ctx)
    return ctx.finish(Summary(STAGE, counts, [STAGE], rows=llm_rows([STAGE], counts)))


def check_pending(ctx: RunContext) -> Counter[str]:
    """Check every persona with an extreme trait and no verdict yet (nor a failed check), then
    bring the `inconsistent:<trait>` flags of the whole bank up to date."""
    bank = ctx.bank
    instrument = get_instrument(ctx.cfg.score.instrument).id
    scores = scores_of(bank.path, instrument, [*TRAITS])
    claims = extreme_claims(scores, ctx.cfg.score.consistency_quantile)
    checked = bank.done(STAGE, failed_stage=STAGE)
    todo = claims.filter(pc.invert(pc.is_in(claims.column(KEY), value_set=checked)))
    counts: Counter[str] = Counter(
        {
            "bank:extreme": claims.num_rows,
            "consistency:skipped_done": claims.num_rows - todo.num_rows,
            "consistency:todo": todo.num_rows,
        }
    )
    if todo.num_rows:
        personas = bank.read("personas", [KEY, "narrative"])
        at = pc.index_in(todo.column(KEY), value_set=personas.column(KEY))
        todo = todo.append_column("narrative", personas.column("narrative").take(at))
        with ctx.endpoints([STAGE]) as (endpoint,):
            counts.update(run_stage(ctx, consistency_stage(ctx.cfg), todo, STAGE, endpoint))
    counts.update(apply_flags(bank, instrument))
    return counts


def apply_flags(bank: Bank, instrument: str) -> Counter[str]:
    """Set the `inconsistent:<trait>` flags of each persona's scores on `instrument` (the one
    whose extremes were checked) from its latest verdicts; rows whose flags change get a new
    `scores` row (the bank keeps the latest)."""
    verdicts = bank.read(STAGE, [KEY, "consistency"])
    contradicted: dict[str, list[str]] = {}
    for pid, row in zip(
        verdicts.column(KEY).to_pylist(), verdicts.column("consistency").to_pylist(), strict=True
    ):
        traits = [v["trait"] for v in row or [] if v["verdict"] == CONTRADICTED]
        if traits:
            contradicted[pid] = traits
    scores = scores_of(bank.path, instrument)
    flags = scores.column("score_flags").to_pylist()
    changed, new_flags = [], []
    for i, pid in enumerate(scores.column(KEY).to_pylist()):
        new = flags_with_verdicts(flags[i], contradicted.get(pid, []))
        if new != (flags[i] or []):
            changed.append(i)
            new_flags.append(new)
    if changed:
        update = scores.take(pa.array(changed))
        position = update.schema.get_field_index("score_flags")
        column = pa.array(new_flags, update.schema.field("score_flags").type)
        bank.write("scores", update.set_column(position, "score_flags", column))
    return Counter(
        {
            "bank:consistency_checked": verdicts.num_rows,
            "bank:inconsistent": len(contradicted),
            "bank:inconsistent_traits": sum(len(t) for t in contradicted.values()),
        }
    )
