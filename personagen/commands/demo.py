"""`personagen demo`: the whole build on the embedded defaults and the bundled example histories.

Offline: the example histories shipped with the project, a local Ray instance, the embedded LLM
(SmolLM2-135M-Instruct through llama.cpp's OpenAI-compatible server) for mining and judging, the
packaged MiniLM embedder and the builtin human reference. It ends with an aligned set and its
report, and with the scorer's own check on the known-answer set next to them.

Scoring: SmolLM2-135M's inventory answers carry no trait signal (Spearman r about 0 against the
designed levels of the known-answer set, `benchmarks/RESULTS.md`), and they cost most of the
demo's time. So unless the configuration names another `score.mode`, the demo scores zero-shot
from the narrative embeddings (`score.mode=embedding`, no LLM), the packaged scorer with the best
known-answer correlation, and says how weak that still is.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

import personagen
from personagen import TRAITS
from personagen.commands.build import build
from personagen.commands.validate_scorer import validate_scorer
from personagen.config import BuildAlignConfig, Config, ScoreConfig
from personagen.errors import PersonagenError
from personagen.runtime.summary import Summary

EXAMPLES_NAME = "histories.jsonl"
DEMO_ALIGNED = 12
"""Personas in the demo's aligned set: about half of what the tiny model's judge keeps."""
DEMO_WINDOW_TOKENS = 1000
"""The demo's history window (the default is 3,000 tokens): the embedded model reads prompts at
~400 tokens/s per core on a laptop-class CPU, and the demo should finish in minutes."""
DEMO_SCORE_MODE = "embedding"
"""The demo's scorer unless the configuration names one (see the module docstring)."""
SIGNAL = 0.3
"""Mean known-answer correlation below which the demo says its traits carry little signal."""


def example_histories() -> Path:
    """The bundled example histories: packaged copy first, then the repository's examples/."""
    package_dir = Path(personagen.__file__).resolve().parent
    for candidate in (
        package_dir / "_examples" / EXAMPLES_NAME,
        package_dir.parent / "examples" / EXAMPLES_NAME,
    ):
        if candidate.is_file():
            return candidate
    raise PersonagenError(f"bundled example histories ({EXAMPLES_NAME}) not found")


def demo_config(cfg: Config) -> Config:
    """`cfg` with the demo's input, a shorter history window, the zero-shot scorer and an
    aligned set to the builtin global reference, unless the configuration already names them."""
    ingest_cfg = cfg.ingest.model_copy(deep=True)
    if ingest_cfg.window.max_tokens == type(ingest_cfg.window)().max_tokens:
        ingest_cfg.window.max_tokens = DEMO_WINDOW_TOKENS
    score_cfg = cfg.score
    if score_cfg.mode == ScoreConfig().mode:
        score_cfg = score_cfg.model_copy(update={"mode": DEMO_SCORE_MODE})
    build_cfg = cfg.build.model_copy(deep=True)
    build_cfg.input = build_cfg.input or str(example_histories())
    if not build_cfg.align.enabled:
        build_cfg.align.enabled = True
        if build_cfg.align.n == BuildAlignConfig().n:
            build_cfg.align.n = DEMO_ALIGNED
        # Zero-shot scores carry the `predicted` flag, and the embedded model's answers the
        # `low_variance` flag: the demo keeps flagged personas to show the whole pipeline.
        build_cfg.align.exclude_flagged = False
    return cfg.model_copy(update={"build": build_cfg, "ingest": ingest_cfg, "score": score_cfg})


def demo(cfg: Config, out: Path) -> Summary:
    """The build of the demo (see `demo_config`) into `out`, then the check of its scorer on
    the known-answer set (zero-shot scoring only: an LLM's check costs thousands of requests,
    `personagen validate-scorer` runs it)."""
    cfg = demo_config(cfg)
    bank = Path(out).resolve()
    summary = build(cfg, bank)
    aligned = Path(summary.outputs["aligned"])
    summary.lines = [
        f"persona bank:      {bank}  (personagen.io.bank.read_bank)",
        f'FAISS index:       {bank / "index"}  (personagen search {bank} "...")',
        f"aligned personas:  {aligned / 'personas.parquet'} ({summary.outputs['align_method']})",
        f"report:            {aligned / 'report.html'}  (open it in a browser)",
        f"manifest:          {bank / 'manifest.json'}",
    ]
    if cfg.score.mode == DEMO_SCORE_MODE:
        summary.lines += scorer_check(cfg, bank / "scorer-check")
    else:
        summary.lines.append(
            f"scorer check:      run `personagen validate-scorer --mode {cfg.score.mode}` to "
            "see whether this model's scores follow known traits"
        )
    return summary


def scorer_check(cfg: Config, out: Path) -> list[str]:
    """The known-answer check of the zero-shot scorer, as console lines: per-trait r, the
    verdict, and in plain words what a weak scorer means for the demo's traits."""
    report = validate_scorer(cfg, out).outputs["report"]
    r = {t: report["traits"][t]["r"] for t in TRAITS}
    mean_r = float(np.mean(list(r.values())))
    lines = [
        f"scorer check:      {out / 'report.html'}",
        "  known-answer personas scored zero-shot, Spearman r with their designed traits: "
        + ", ".join(f"{t} {v:.2f}" for t, v in r.items())
        + f" (mean {mean_r:.2f})",
        f"  {report['verdict']['text']}",
    ]
    if mean_r < SIGNAL:
        lines.append(
            f"  In plain words: the packaged models read personality off a narrative only "
            f"weakly (mean r {mean_r:.2f}; 0.6 and above is usable), so these personas' traits "
            "order them roughly at best. For a bank worth aligning, point llm.base_url at a "
            "larger model and run `personagen validate-scorer` with it first."
        )
    return lines
