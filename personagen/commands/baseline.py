"""`personagen baseline --kind KIND --n N --out BANK`: the sets a persona bank is compared with.

Each kind writes a bank like any other (`score`, `embed`, `evaluate`, `align` and `experiment`
take it), with the manifest's `origin` saying what it is:

- `llm-personas`: the configured LLM writes N personas from nothing with a plain "describe a
  person" prompt (`personagen.stages.describe`): the GPT-4o-written baseline of the paper. Score
  them with `personagen score` like mined ones.
- `no-persona`: the bare model answers the inventory N times, sampled at `baseline.temperature`
  with a seed per respondent and item (`score.instrument`, text mode): what the model says
  about "itself". Its N respondents have no narrative; `personagen score` on the bank (a second
  instrument) asks the bare model again.
- `random`: N personas drawn at random (`seed`) from the bank `--from`, among those the judge
  did not reject, with every column group they have there (scores of every instrument,
  embeddings) and the source's manifest.

A re-run with the same settings adds what is missing (N larger, failed rows recorded); other
settings are refused (`--replace` starts the bank over).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from personagen.commands.render import llm_rows
from personagen.commands.score import score
from personagen.config import Config
from personagen.errors import PersonagenError
from personagen.io.bank import GROUPS, KEY, Bank
from personagen.psychometrics.instruments import get_instrument
from personagen.psychometrics.scoring import check_min_items
from personagen.runtime.context import RunContext, run_stage
from personagen.runtime.summary import Summary
from personagen.stages import describe

KINDS = ("llm-personas", "no-persona", "random")
PER_PERSONA_GROUPS = ("personas", "quality", "scores", "consistency", "embeddings")
"""The groups a random draw copies (keyed by persona; a bank's histories stay behind)."""


def baseline(
    cfg: Config,
    kind: str,
    n: int,
    bank: str | Path,
    *,
    source: str | Path | None = None,
    replace: bool = False,
) -> Summary:
    """Write the `kind` baseline set of `n` personas into `bank` (see the module docstring);
    `source`: the bank a `random` set is drawn from."""
    if kind not in KINDS:
        raise PersonagenError(f"unknown baseline kind {kind!r}: choose one of {', '.join(KINDS)}")
    if n < 1:
        raise PersonagenError(f"--n must be at least 1, not {n}")
    if (kind == "random") != (source is not None):
        raise PersonagenError(
            "--from BANK names the bank a random set is drawn from (and only a random set)"
        )
    # what the kind needs is checked before the bank is made or touched
    if kind == "no-persona":
        check_min_items(get_instrument(cfg.score.instrument), cfg.score.min_items_per_trait)
    eligible = _eligible(Bank(str(source)), n) if kind == "random" else np.empty(0)
    ctx = RunContext(cfg, bank, "baseline")
    if replace:
        ctx.bank.clear()
    ctx.bank.claim_origin(f"baseline:{kind}")
    settings = {"kind": kind, **_settings(cfg, kind, source)}
    ctx.bank.claim(
        "baseline",
        settings,
        lambda recorded: (
            f"bank {ctx.bank.path} holds a {kind} baseline made with other settings "
            f"({_differ(recorded, settings)}): pass --replace to start it over"
        ),
        held=ctx.bank.has("personas"),
    )
    if kind == "llm-personas":
        return _llm_personas(ctx, n)
    if kind == "no-persona":
        return _no_persona(ctx, n)
    return _random(ctx, n, Bank(str(source)), eligible)


def _settings(cfg: Config, kind: str, source: str | Path | None) -> dict[str, Any]:
    """What makes two runs the same baseline (recorded in the manifest's `baseline`)."""
    if kind == "random":
        return {"source": str(Path(str(source)).resolve()), "seed": cfg.seed}
    model = cfg.stage_llm(describe.STAGE if kind == "llm-personas" else "score").model
    return {"model": model, "temperature": cfg.baseline.temperature, "seed": cfg.seed}


def _differ(recorded: dict[str, Any], settings: dict[str, Any]) -> str:
    return ", ".join(
        f"{k} {recorded[k]!r}, not {settings[k]!r}" for k in settings if recorded[k] != settings[k]
    )


def persona_ids(kind: str, n: int) -> list[str]:
    """The ids of a written baseline's personas: stable, so a larger N extends the set."""
    return [f"{kind}/{i:05d}" for i in range(n)]


def _llm_personas(ctx: RunContext, n: int) -> Summary:
    """The personas of N not yet written (nor failed), written by the LLM."""
    done = set(ctx.bank.done("personas", failed_stage=describe.STAGE).to_pylist())
    todo = [i for i in persona_ids("llm-personas", n) if i not in done]
    counts = Counter({"baseline:n": n, "baseline:skipped_done": n - len(todo)})
    if todo:
        schema = pa.schema(
            [f for f in GROUPS["personas"] if f.name in (KEY, "user_id", "window_id")]
        )
        rows = pa.table(
            {KEY: todo, "user_id": [None] * len(todo), "window_id": [None] * len(todo)}, schema
        )
        stage = describe.describe_stage(ctx.cfg, ctx.cfg.baseline.temperature)
        with ctx.endpoints([describe.STAGE]) as (endpoint,):
            counts.update(run_stage(ctx, stage, rows, "personas", endpoint))
    counts["bank:personas"] = ctx.bank.read("personas", [KEY]).num_rows
    rows = [
        ("personas asked for (N)", "baseline:n"),
        ("  already written or failed (skipped)", "baseline:skipped_done"),
        ("  written this run", "describe:out"),
        ("  failures (in failures)", "describe:failed"),
        ("bank personas", "bank:personas"),
    ]
    summary = Summary(
        "baseline", counts, [describe.STAGE], rows=rows + llm_rows([describe.STAGE], counts)
    )
    summary.lines.append(f"score them next: personagen score {ctx.bank.path}")
    return ctx.finish(summary)


def _no_persona(ctx: RunContext, n: int) -> Summary:
    """N respondents without a narrative, then the bare model's answers (`personagen score`
    reads the bank's origin: text mode, the baseline's temperature, no persona)."""
    ctx.bank.update_manifest(baseline={**ctx.bank.manifest()["baseline"], "n": n})
    written = set(ctx.bank.done("personas").to_pylist())
    new = [i for i in persona_ids("no-persona", n) if i not in written]
    if new:
        ctx.bank.write("personas", _bare_rows(new, ctx.cfg.stage_llm("score").model))
    summary = score(ctx.cfg, ctx.bank.path)
    summary.counts["baseline:n"] = n
    summary.rows = [("respondents asked for (N)", "baseline:n"), *summary.rows]
    return summary


def _bare_rows(ids: list[str], model: str) -> pa.Table:
    """`personas` rows of respondents that are the bare model: an empty narrative."""
    columns: dict[str, Any] = {KEY: ids, "narrative": [""] * len(ids), "model": [model] * len(ids)}
    schema = GROUPS["personas"]
    return pa.table(
        {f.name: columns.get(f.name, pa.nulls(len(ids), f.type)) for f in schema}, schema=schema
    )


def _eligible(source: Bank, n: int) -> np.ndarray:
    """The ids of `source`'s personas not rejected by its judge (an error if fewer than N)."""
    if not source.has("personas"):
        raise PersonagenError(
            f"no personas in {source.path} to draw a random set from: give a bank with --from"
        )
    ids = source.read("personas", [KEY]).column(KEY)
    quality = source.read("quality", [KEY, "kept"])
    rejected = quality.filter(pc.equal(quality.column("kept"), False)).column(KEY)
    eligible = np.array(sorted(pc.filter(ids, pc.invert(pc.is_in(ids, rejected))).to_pylist()))
    if n > eligible.size:
        raise PersonagenError(
            f"--n {n} is more than the {eligible.size:,} personas of {source.path} the judge did "
            f"not reject: ask for at most {eligible.size:,}"
        )
    return eligible


def _random(ctx: RunContext, n: int, source: Bank, eligible: np.ndarray) -> Summary:
    """N of `source`'s personas (`eligible`: not rejected by its judge) with all their rows."""
    chosen = pa.array(np.random.default_rng(ctx.cfg.seed).choice(eligible, n, replace=False))
    counts: Counter[str] = Counter({"baseline:n": n, "source:eligible": int(eligible.size)})
    ctx.bank.drop(PER_PERSONA_GROUPS)
    for group in PER_PERSONA_GROUPS:
        table = source.read(group)
        table = table.filter(pc.is_in(table.column(KEY), chosen))
        if table.num_rows:
            ctx.bank.write(group, table)
        counts[f"bank:{group}"] = table.num_rows
    ctx.bank.update_manifest(
        **{k: v for k, v in source.manifest().items() if k not in ("origin", "baseline")}
    )
    rows = [
        ("personas of the source not rejected", "source:eligible"),
        ("  drawn (N)", "baseline:n"),
        *[(f"bank rows: {group}", f"bank:{group}") for group in PER_PERSONA_GROUPS],
    ]
    return ctx.finish(Summary("baseline", counts, [], rows=rows))
