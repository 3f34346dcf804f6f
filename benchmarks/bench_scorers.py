"""Which scorer reads the designed traits off the known-answer set, and at what cost per persona.

Every scorer scores the packaged known-answer set (`personagen.psychometrics.known_answer`: 200
narratives written to designed, uncorrelated Big Five levels; `--limit N` takes the first N) in
a fresh bank with the real `personagen score` (the embedded llama.cpp model unless `--set
llm.base_url=...`), and the table gives per trait Spearman's r between designed and scored
levels, the largest |r| off the diagonal of designed x scored (discriminant validity: a trait
leaking into another's scores), and wall seconds per persona (the whole command, server start
included). Statistics: `personagen.evaluate.validity`, as `personagen validate-scorer` reports
them.

Rows of earlier runs into the same OUT stay in the table (each run replaces the rows of the
scorers it runs), so a slow scorer can run on fewer personas (`--limit`) than a fast one. With
`--set llm.cache_dir=DIR` shared by the `logprob` and `calibrated` rows, calibrated scoring
reuses the logprob answers (its requests are the same) and sends only its content-free ones
(the `cached/p` column says so).

Scorers:

    logprob, calibrated, text, batch   score.mode=<that>, one LLM answer per persona
    embedding                          zero-shot keyed similarity of narrative and items, no LLM
    surrogate-stub                     --surrogate F with a stub LLM whose answers follow the
                                       designed levels (what the surrogate can learn at best)
    surrogate                          --surrogate F with the configured LLM

Surrogate rows are measured on the personas the surrogate predicted (not those it LLM-scored),
with the coverage of their 90% intervals and their agreement (Pearson r, MAE) with what the LLM
answers for them: the stub's answers for `surrogate-stub`, the `logprob` row's scores (when it
ran before, in the same OUT) for `surrogate`.

    python benchmarks/bench_scorers.py [--scorers logprob,calibrated,...] [--limit 200]
        [--fraction 0.1] [--out DIR] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from llm_test_server import LLMTestServer  # noqa: E402
from test_validate_scorer import designed_logprobs  # noqa: E402

from personagen import TRAITS  # noqa: E402
from personagen.commands.score import score  # noqa: E402
from personagen.commands.validate_scorer import bank_personas  # noqa: E402
from personagen.config import load_config  # noqa: E402
from personagen.evaluate.validity import validity  # noqa: E402
from personagen.io.bank import KEY, Bank, read_group  # noqa: E402
from personagen.psychometrics.known_answer import known_answer_set  # noqa: E402

SCORERS = ("logprob", "calibrated", "text", "batch", "embedding", "surrogate-stub", "surrogate")
LLM_MODES = ("logprob", "calibrated", "text", "batch")


@contextlib.contextmanager
def endpoint(scorer: str) -> Iterator[list[str]]:
    """The `--set` values of the scorer's LLM: a design-following stub for `surrogate-stub`,
    else the configured one."""
    if scorer != "surrogate-stub":
        yield []
        return
    with LLMTestServer(logprobs=designed_logprobs) as server:
        yield [f"llm.base_url={server.base_url}", "llm.concurrency=16", "llm.timeout_s=30"]


def run(scorer: str, limit: int, fraction: float, out: Path, sets: list[str]) -> dict[str, Any]:
    """Score the set with one scorer in a fresh bank; its row of the table."""
    personas, design = known_answer_set()
    personas, design = personas.slice(0, limit), design[:limit]
    bank = Bank(out / scorer / "bank")
    shutil.rmtree(bank.path, ignore_errors=True)
    bank.write("personas", bank_personas(personas, pa.array([], pa.string())))
    mode = scorer if scorer in (*LLM_MODES, "embedding") else "auto"
    surrogate = fraction if scorer.startswith("surrogate") else None
    load_before = os.getloadavg()
    with endpoint(scorer) as stub:
        cfg = load_config(overrides=[*sets, *stub, f"score.mode={mode}", "progress_s=60"])
        started = time.perf_counter()
        summary = score(cfg, bank.path, surrogate=surrogate)
        wall = time.perf_counter() - started
    rows = {r[KEY]: r for r in read_group(bank.path, "scores").to_pylist()}
    ids = personas.column(KEY).to_pylist()
    measured = [i for i, pid in enumerate(ids) if pid in rows]
    if surrogate is not None:
        measured = [i for i in measured if rows[ids[i]]["answer_mode"] == "surrogate"]
    traits = np.array([[rows[ids[i]][t] for t in TRAITS] for i in measured], dtype=np.float64)
    known = design[measured].astype(np.float64)
    stats = validity(known, traits, resamples=200)
    row: dict[str, Any] = {
        "scorer": scorer,
        "personas": len(measured),
        "answer_mode": sorted({rows[ids[i]]["answer_mode"] for i in measured}),
        "r": [stats["traits"][t]["r"] for t in TRAITS],
        "discriminant_max_abs": stats["discriminant_max_abs"],
        "s_per_persona": wall / limit,
        "requests_per_persona": summary.counts["score:requests"] / limit,
        "cached_per_persona": summary.counts["score:cache_hits"] / limit,
        "load_before": load_before,
        "load_after": os.getloadavg(),
    }
    if surrogate is not None:
        row["held_out"] = bank.manifest()["score"]["surrogate"]["traits"]
        answers = llm_answers(scorer, [ids[i] for i in measured], known, out)
        if answers is not None:
            row["vs_llm"] = versus_llm(rows, [ids[i] for i in measured], traits, answers)
    return row


def llm_answers(scorer: str, ids: list[str], known: np.ndarray, out: Path) -> np.ndarray | None:
    """What the LLM scores the predicted personas as: the stub's answers (0.75 x level + 0.75,
    see `designed_logprobs`), or the `logprob` row's scores of this OUT (None if it has none)."""
    if scorer == "surrogate-stub":
        return 0.75 * known + 0.75
    reference = out / "logprob" / "bank"
    if not reference.is_dir():
        return None
    scored = {r[KEY]: r for r in read_group(reference, "scores").to_pylist()}
    return np.array([[scored[i][t] if i in scored else np.nan for t in TRAITS] for i in ids])


def versus_llm(
    rows: dict[str, dict], ids: list[str], predicted: np.ndarray, answers: np.ndarray
) -> dict[str, Any]:
    """Agreement of the predictions with the LLM's answers: per trait Pearson r and MAE, and
    the share of 90% intervals that hold the answer."""
    low = np.array([[rows[i]["trait_interval"][f"{t}_low"] for t in TRAITS] for i in ids])
    high = np.array([[rows[i]["trait_interval"][f"{t}_high"] for t in TRAITS] for i in ids])
    found = np.isfinite(answers)
    r = [
        float(np.corrcoef(answers[found[:, j], j], predicted[found[:, j], j])[0, 1])
        for j in range(5)
    ]
    return {
        "r": r,
        "mae": [
            float(np.mean(np.abs(answers[found[:, j], j] - predicted[found[:, j], j])))
            for j in range(5)
        ],
        "coverage": float(np.mean(((low <= answers) & (answers <= high))[found])),
    }


def table(results: list[dict[str, Any]]) -> str:
    head = [
        "scorer",
        "n",
        *[t[:4] for t in TRAITS],
        "mean r",
        "discr",
        "s/persona",
        "req/p",
        "cached/p",
    ]
    lines = [
        " | ".join(head),
        " | ".join("---" for _ in head),
    ]
    for row in results:
        cells = [
            row["scorer"],
            str(row["personas"]),
            *[f"{r:.2f}" for r in row["r"]],
            f"{np.mean(row['r']):.2f}",
            f"{row['discriminant_max_abs']:.2f}",
            f"{row['s_per_persona']:.2f}",
            f"{row['requests_per_persona']:.1f}",
            f"{row['cached_per_persona']:.1f}",
        ]
        lines.append(" | ".join(cells))
    for row in results:
        load = ", ".join(
            f"{a:.1f}->{b:.1f}" for a, b in zip(row["load_before"], row["load_after"], strict=True)
        )
        lines.append(f"{row['scorer']}: load (1/5/15 min, before->after) {load}")
        if "vs_llm" in row:
            vs = row["vs_llm"]
            lines.append(
                f"  predicted vs the LLM's answers: r {' '.join(f'{r:.2f}' for r in vs['r'])}, "
                f"MAE {' '.join(f'{m:.2f}' for m in vs['mae'])}, 90% interval coverage "
                f"{vs['coverage']:.2f}"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scorers", default=",".join(SCORERS))
    parser.add_argument("--limit", type=int, default=200, help="first N known-answer personas")
    parser.add_argument("--fraction", type=float, default=0.1, help="surrogate: share LLM-scored")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-scorers"))
    parser.add_argument("--set", dest="sets", action="append", default=[], help="key=value")
    args = parser.parse_args()
    scorers = args.scorers.split(",")
    unknown = sorted(set(scorers) - set(SCORERS))
    if unknown:
        parser.error(f"unknown scorer(s) {', '.join(unknown)}; choose from {', '.join(SCORERS)}")
    saved = args.out / "results.json"
    results = json.loads(saved.read_text()) if saved.exists() else {}
    for scorer in scorers:  # rows of earlier runs into the same OUT stay in the table
        results[scorer] = run(scorer, args.limit, args.fraction, args.out, args.sets)
        saved.write_text(json.dumps(results, indent=2))
        print(table([results[s] for s in SCORERS if s in results]), flush=True)
    print(f"cores: {os.cpu_count()}; results: {saved}")


if __name__ == "__main__":
    main()
