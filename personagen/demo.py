"""`personagen demo`: the pipeline on the embedded defaults and the bundled example histories."""

from __future__ import annotations

from pathlib import Path

import personagen
from personagen.config import Config
from personagen.errors import PersonagenError
from personagen.ingest import IngestSummary, ingest

EXAMPLES_NAME = "histories.jsonl"


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


def run_demo(cfg: Config, out: Path) -> IngestSummary:
    """Stages available so far: ingest (the LLM, scoring and alignment stages follow)."""
    return ingest(example_histories(), out / "ingest", cfg)
