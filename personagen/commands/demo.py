"""`personagen demo`: the whole build on the embedded defaults and the bundled example histories.

Offline: the example histories shipped with the project, a local Ray instance, the embedded LLM
(SmolLM2-135M-Instruct through llama.cpp's OpenAI-compatible server), the packaged MiniLM
embedder and the builtin human reference. It ends with an aligned set and its report.
"""

from __future__ import annotations

from pathlib import Path

import personagen
from personagen.commands.build import build
from personagen.config import BuildAlignConfig, Config
from personagen.errors import PersonagenError
from personagen.runtime.summary import Summary

EXAMPLES_NAME = "histories.jsonl"
DEMO_ALIGNED = 12
"""Personas in the demo's aligned set: about half of what the tiny model's judge keeps."""
DEMO_WINDOW_TOKENS = 1000
"""The demo's history window (the default is 3,000 tokens): the embedded model reads prompts at
~400 tokens/s per core on a laptop-class CPU, and the demo should finish in minutes."""


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
    """`cfg` with the demo's input, a shorter history window and an aligned set to the builtin
    global reference, unless the configuration already names them."""
    ingest_cfg = cfg.ingest.model_copy(deep=True)
    if ingest_cfg.window.max_tokens == type(ingest_cfg.window)().max_tokens:
        ingest_cfg.window.max_tokens = DEMO_WINDOW_TOKENS
    build_cfg = cfg.build.model_copy(deep=True)
    build_cfg.input = build_cfg.input or str(example_histories())
    if not build_cfg.align.enabled:
        build_cfg.align.enabled = True
        if build_cfg.align.n == BuildAlignConfig().n:
            build_cfg.align.n = DEMO_ALIGNED
        # The 135M embedded model's answers barely vary between items, so nearly every persona
        # gets the `low_variance` flag; the demo keeps them to show the whole pipeline.
        build_cfg.align.exclude_flagged = False
    return cfg.model_copy(update={"build": build_cfg, "ingest": ingest_cfg})


def demo(cfg: Config, out: Path) -> Summary:
    """The build of the demo (see `demo_config`) into `out`."""
    bank = Path(out).resolve()
    summary = build(demo_config(cfg), bank)
    aligned = Path(summary.outputs["aligned"])
    summary.lines = [
        f"persona bank:      {bank}  (personagen.io.bank.read_bank)",
        f'FAISS index:       {bank / "index"}  (personagen search {bank} "...")',
        f"aligned personas:  {aligned / 'personas.parquet'} ({summary.outputs['align_method']})",
        f"report:            {aligned / 'report.html'}  (open it in a browser)",
        f"manifest:          {bank / 'manifest.json'}",
    ]
    return summary
