"""Run bookkeeping shared by the LLM stages: resolved settings, provenance, summaries, usage.

Every run of an LLM stage records in the bank manifest what produced its answers (model,
endpoint, prompt version, temperature, seed), adds its token usage (and cost, with a price table)
to the manifest's running totals, and ends with a summary whose counts must add up.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from personagen.config import Config, LLMConfig, mask_urls
from personagen.errors import PersonagenError
from personagen.io.bank import read_manifest, update_manifest
from personagen.llm.client import Endpoint
from personagen.llm.usage import Usage
from personagen.summary import print_counts


def stage_llm(cfg: Config, llm: LLMConfig, max_tokens: int | None = None) -> LLMConfig:
    """`llm` with the run's seed resolved (`llm.seed`, else the top-level `seed`), and an
    embedded server without per-token logits unless the stage's section asked for them (only
    scoring reads logprobs; computing them costs 15-20% of the embedded model's speed)."""
    update: dict[str, Any] = {"seed": llm.seed if llm.seed is not None else cfg.seed}
    if llm.embedded.logits_all is None:
        update["embedded"] = llm.embedded.model_copy(update={"logits_all": False})
    if max_tokens is not None:
        update["max_tokens"] = max_tokens
    return llm.model_copy(update=update)


def cache_folder(cfg: Config, bank: str | Path) -> str | None:
    """Where the response cache lives (None when disabled): `llm.cache_dir` or BANK/llm-cache."""
    if not cfg.llm.cache:
        return None
    folder = Path(cfg.llm.cache_dir) if cfg.llm.cache_dir else Path(bank) / "llm-cache"
    return str(folder.resolve())


def record_stage(
    bank: str | Path, stage: str, llm: LLMConfig, endpoint: Endpoint, prompt_version: str
) -> None:
    """Provenance of a stage's answers in the manifest (no secrets: URLs are masked)."""
    update_manifest(
        bank,
        **{
            stage: {
                "model": llm.model,
                "endpoint": mask_urls(endpoint.identity),
                "prompt_version": prompt_version,
                "temperature": llm.temperature,
                "seed": llm.seed,
                "max_tokens": llm.max_tokens,
                "response_format": llm.response_format,
            }
        },
    )


@dataclass
class RunSummary:
    """Counts of one run; `check()` raises if they do not add up."""

    counts: Counter[str]
    stages: list[str]
    wall_s: float = 0.0
    costs: dict[str, float | None] = field(default_factory=dict)

    def check(self) -> None:
        c = self.counts
        problems = []
        for stage in self.stages:
            if c[f"{stage}:in"] != c[f"{stage}:out"] + c[f"{stage}:failed"]:
                problems.append(
                    f"{stage}: in {c[f'{stage}:in']} != out {c[f'{stage}:out']}"
                    f" + failed {c[f'{stage}:failed']}"
                )
            if f"{stage}:todo" in c and c[f"{stage}:todo"] != c[f"{stage}:in"]:
                problems.append(f"{stage}: {c[f'{stage}:todo']} to do, {c[f'{stage}:in']} done")
        if problems:
            raise PersonagenError("run counts do not add up: " + "; ".join(problems))

    def usage(self, stage: str) -> Usage:
        return Usage.from_counts(self.counts, stage)

    def as_dict(self) -> dict[str, Any]:
        return {
            "stages": self.stages,
            "wall_s": round(self.wall_s, 3),
            "counts": dict(sorted(self.counts.items())),
            "cost_usd": {k: v for k, v in self.costs.items() if v is not None},
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }


def finish_run(bank: str | Path, summary: RunSummary, cfg: Config, name: str) -> None:
    """Check the counts, add usage and cost to the manifest totals, write BANK/summary-NAME.json."""
    summary.check()
    bank = Path(bank)
    manifest = read_manifest(bank)
    totals: dict[str, Any] = manifest.get("llm_usage", {})
    for stage in summary.stages:
        usage = summary.usage(stage)
        model = manifest.get(stage, {}).get("model", cfg.llm.model)
        cost = usage.cost_usd(cfg.llm.prices.get(model))
        summary.costs[stage] = cost
        previous = totals.get(stage, {})
        total = Usage(**{k: v for k, v in previous.items() if k != "cost_usd"})
        total.add(usage)
        entry: dict[str, Any] = asdict(total)
        if cost is not None:
            entry["cost_usd"] = round(previous.get("cost_usd", 0.0) + cost, 6)
        totals[stage] = entry
    report = summary.as_dict()
    update_manifest(bank, llm_usage=totals, last_run={name: report})
    (bank / f"summary-{name}.json").write_text(json.dumps(report, indent=2), encoding="utf-8")


STAGE_ROWS = {
    "mine": [
        ("history rows", "histories"),
        ("  already mined or failed (skipped)", "mine:skipped_done"),
        ("  mined this run", "mine:in"),
        ("    personas written", "mine:out"),
        ("    mining failures (in failures)", "mine:failed"),
    ],
    "judge": [
        ("judged this run", "judge:in"),
        ("  judgements written", "judge:out"),
        ("  judge failures (in failures)", "judge:failed"),
        ("bank personas judged", "bank:judged"),
        ("  kept", "bank:kept"),
        ("  rejected below threshold", "bank:below_threshold"),
        ("  near-duplicates flagged", "bank:duplicates"),
    ],
    "score": [
        ("bank personas", "bank:personas"),
        ("  rejected by the judge (not scored)", "score:rejected"),
        ("  without a judge verdict", "score:unjudged"),
        ("    of which left out (score.only_kept)", "score:unjudged_left_out"),
        ("  already scored or failed (skipped)", "score:skipped_done"),
        ("  scored this run", "score:in"),
        ("    scores written", "score:out"),
        ("    scoring failures (in failures)", "score:failed"),
        ("bank personas scored", "bank:scored"),
        ("  in logprob mode", "bank:mode:logprob"),
        ("  in logprob mode, some items as text", "bank:mode:logprob+text"),
        ("  in text mode", "bank:mode:text"),
        ("  in batch mode", "bank:mode:batch"),
        ("  flagged (score_flags)", "bank:flagged"),
        ("    acquiescent", "bank:flag:acquiescent"),
        ("    nay-saying", "bank:flag:nay_saying"),
        ("    low variance", "bank:flag:low_variance"),
        ("    with failed items", "bank:flag:failed_items"),
        ("  failed items in all", "bank:failed_items"),
    ],
    "consistency": [
        ("personas with an extreme trait", "bank:extreme"),
        ("  already checked or failed (skipped)", "consistency:skipped_done"),
        ("  checked this run", "consistency:in"),
        ("    verdicts written", "consistency:out"),
        ("    check failures (in failures)", "consistency:failed"),
        ("bank personas checked", "bank:consistency_checked"),
        ("  contradicted by their narrative", "bank:inconsistent"),
        ("  contradicted traits", "bank:inconsistent_traits"),
    ],
}


def print_summary(title: str, summary: RunSummary, console: Console | None = None) -> None:
    rows: list[tuple[str, str]] = []
    for stage in summary.stages:
        rows += STAGE_ROWS.get(stage, [])
    for stage in summary.stages:
        rows += [
            (f"{stage}: requests", f"{stage}:requests"),
            ("  retries", f"{stage}:retries"),
            ("  repair requests", f"{stage}:repairs"),
            ("  answers from the cache", f"{stage}:cache_hits"),
            ("  prompt tokens", f"{stage}:prompt_tokens"),
            ("  completion tokens", f"{stage}:completion_tokens"),
        ]
    failure_kinds = sorted(k for k in summary.counts if k.count(":") == 2 and ":failed:" in k)
    rows += [(f"  failed: {k.split(':', 2)[2]} ({k.split(':')[0]})", k) for k in failure_kinds]
    console = console or Console()
    print_counts(title, summary.counts, rows, summary.wall_s, console)
    for stage, cost in summary.costs.items():
        if cost is not None:
            console.print(f"{stage} cost: ${cost:,.4f}")
