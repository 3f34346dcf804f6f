"""Provenance: what produced a bank's rows, recorded in its manifest.

Every run of an LLM stage records what produced its answers (model, endpoint, prompt version,
temperature, seed), adds its token usage (and cost, with a price table) to the manifest's
running totals, and writes its summary (BANK/summary-<command>.json). Builds also record the
package versions and a fingerprint of their input files.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import Any

from personagen import __version__
from personagen.config import LLM_STAGES, Config, LLMConfig, mask_urls
from personagen.io.bank import read_manifest, update_manifest
from personagen.llm.client import Endpoint
from personagen.llm.usage import Usage
from personagen.runtime.summary import Summary

PACKAGES = (
    "ray",
    "openai",
    "pyarrow",
    "numpy",
    "scipy",
    "pot",
    "faiss-cpu",
    "sentence-transformers",
    "torch",
    "llama-cpp-python",
    "pydantic",
)


def cache_folder(cfg: Config, bank: str | Path) -> str | None:
    """Where the response cache lives (None when disabled): `llm.cache_dir` or BANK/llm-cache."""
    if not cfg.llm.cache:
        return None
    folder = Path(cfg.llm.cache_dir) if cfg.llm.cache_dir else Path(bank) / "llm-cache"
    return str(folder.resolve())


def record_stage(
    bank: str | Path,
    stage: str,
    llm: LLMConfig,
    endpoint: Endpoint,
    prompt_version: str,
    **extra: Any,
) -> None:
    """Provenance of a stage's answers in the manifest (no secrets: URLs are masked); `extra`
    adds what the stage itself says about them (e.g. scoring's instrument and item order)."""
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
                **extra,
            }
        },
    )


def finish_run(bank: str | Path, summary: Summary, cfg: Config) -> None:
    """Check the counts, add the LLM stages' usage and cost to the manifest totals, and write
    BANK/summary-<command>.json."""
    summary.check()
    name = summary.command
    bank = Path(bank)
    manifest = read_manifest(bank)
    totals: dict[str, Any] = manifest.get("llm_usage", {})
    for stage in (s for s in summary.stages if s in LLM_STAGES):
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


def input_fingerprint(files: list[Path]) -> dict[str, Any]:
    """sha256 over the input files' names and contents: what a re-run must be given again."""
    digest = hashlib.sha256()
    size = 0
    for path in files:
        digest.update(path.name.encode() + b"\0")
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
                size += len(chunk)
    return {"files": len(files), "bytes": size, "sha256": digest.hexdigest()}


def package_versions() -> dict[str, str]:
    versions = {"personagen": __version__}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions
