"""`hf`: a Hugging Face `datasets` folder (`Dataset.save_to_disk`) with a dataset card.

The folder loads with `datasets.load_from_disk`; its README.md is the card the Hub shows, with
the YAML header it reads (licence, pretty name, size category, tags). The card says where the
personas came from (the source corpus and its licence, from the bank's manifest), what made
them (models and prompt versions, from the rows themselves), what they were aligned to (the
reference, group and method, from the set's report) and how close they came (each distance as a
multiple of its noise floor), then their known limits and intended use.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import yaml

from personagen import TRAITS, __version__
from personagen.exports.sets import ExportSource

CARD = "README.md"
SIZE_CATEGORIES = (
    (10**3, "n<1K"),
    (10**4, "1K<n<10K"),
    (10**5, "10K<n<100K"),
    (10**6, "100K<n<1M"),
    (10**7, "1M<n<10M"),
    (10**8, "10M<n<100M"),
)
"""The Hub's size categories, by upper bound."""
TAGS = ["personas", "synthetic", "social-simulation", "big-five", "personagen"]
PROVENANCE = (
    ("mine", "model", "prompt_version"),
    ("judge", "judge_model", "judge_prompt_version"),
    ("score", "score_model", "score_prompt_version"),
    ("consistency", "consistency_model", "consistency_prompt_version"),
    ("revise", "revise_model", "revise_prompt_version"),
)
"""(stage, model column, prompt version column) of the bank's groups."""

BLOG_CORPUS = {
    "name": "the Blog Authorship Corpus (Schler et al., 2006; blogger.com, August 2004)",
    "license": "other",
    "license_name": "blog-authorship-corpus",
    "license_link": "https://u.cs.biu.ac.il/~koppel/BlogCorpus.htm",
    "note": "its homepage allows use for non-commercial research",
}
IMPORTED = {
    "personahub": {
        "name": "PersonaHub (proj-persona/PersonaHub)",
        "license": "cc-by-nc-sa-4.0",
        "source_datasets": ["proj-persona/PersonaHub"],
    },
    "nemotron": {"name": "Nemotron-Personas (NVIDIA)", "license": "cc-by-4.0"},
}
UNKNOWN = {
    "name": "not recorded in the bank's manifest",
    "license": "unknown",
    "note": "state the source and its licence (`--license`) before sharing this set",
}


def write(rows: pa.Table, path: Path, source: ExportSource, *, license: str | None = None) -> None:
    """save_to_disk the rows, then the card beside them."""
    import datasets
    from datasets.table import InMemoryTable

    corpus = source_corpus(source.manifest)
    if license is not None:
        corpus = {**corpus, "license": license, "note": "licence as given to the export"}
        corpus = {k: v for k, v in corpus.items() if k not in ("license_name", "license_link")}
    info = datasets.DatasetInfo(description=_title(source), license=corpus["license"])
    quiet = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        datasets.Dataset(InMemoryTable(rows), info=info).save_to_disk(str(path))
    finally:
        if not quiet:
            datasets.enable_progress_bars()
    (path / CARD).write_text(card(rows, source, corpus), encoding="utf-8")


def source_corpus(manifest: dict[str, Any]) -> dict[str, Any]:
    """Name and licence of the texts the personas come from, as the manifest records them."""
    imported = manifest.get("import")
    if imported:
        known = IMPORTED.get(imported.get("format"), UNKNOWN)
        return {**known, "path": imported.get("source")}
    build = manifest.get("build") or {}
    if build.get("format") == "blogs-xml":
        return {**BLOG_CORPUS, "path": build.get("input")}
    return {**UNKNOWN, "path": build.get("input") or manifest.get("histories")}


def card(rows: pa.Table, source: ExportSource, corpus: dict[str, Any]) -> str:
    """The README.md: YAML header, then the sections."""
    meta: dict[str, Any] = {"license": corpus["license"]}
    meta.update({k: corpus[k] for k in ("license_name", "license_link") if k in corpus})
    meta["pretty_name"] = _title(source)
    meta["size_categories"] = [_size_category(rows.num_rows)]
    meta["tags"] = TAGS
    if "source_datasets" in corpus:
        meta["source_datasets"] = corpus["source_datasets"]
    sections = [
        f"# {_title(source)}",
        _summary(rows, source),
        "## Source\n\n" + _source(corpus),
        "## How the personas were made\n\n"
        + _provenance(source.table)
        + _settings(source.manifest),
        "## Alignment\n\n" + _alignment(source),
        "## Fields\n\n" + _fields(rows),
        "## Known limits\n\n" + _limits(source),
        "## Intended use\n\n" + INTENDED_USE,
    ]
    header = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)
    return f"---\n{header}---\n\n" + "\n\n".join(sections) + "\n"


def _title(source: ExportSource) -> str:
    what = {"bank": "persona bank", "aligned": "aligned persona set", "adapted": "adapted set"}
    name = source.path.name if source.kind == "bank" else source.path.parent.name
    return f"personagen {what.get(source.kind, 'persona set')}: {name}"


def _size_category(n: int) -> str:
    return next((label for bound, label in SIZE_CATEGORIES if n < bound), "100M<n<1B")


def _summary(rows: pa.Table, source: ExportSource) -> str:
    lines = [
        f"{rows.num_rows:,} personas exported by personagen {__version__} from `{source.path}`"
        f" ({source.kind}). Each row is a narrative persona (a third-person description of a "
        "person, written by an LLM), its attributes and its Big Five traits on the 1-5 scale of "
        f"the inventory it answered as itself ({source.instrument or 'instrument not recorded'})."
    ]
    if source.unscored:
        lines.append(f"{source.unscored:,} personas without trait scores were left out.")
    if "weight" in rows.column_names:
        lines.append("`weight` is each persona's weight in the alignment (`weights.parquet`).")
    return " ".join(lines)


def _source(corpus: dict[str, Any]) -> str:
    lines = [f"- Corpus: {corpus['name']}"]
    if corpus.get("path"):
        lines.append(f"- Path when built: `{corpus['path']}`")
    licence = corpus["license"]
    if corpus.get("license_link"):
        licence += f" ({corpus['license_link']})"
    lines.append(f"- Licence: {licence}" + (f"; {corpus['note']}" if corpus.get("note") else ""))
    return "\n".join(lines)


def _provenance(table: pa.Table) -> str:
    """Stage | model | prompt version | personas, from the rows' own provenance columns."""
    lines = ["| stage | model | prompt version | personas |", "|---|---|---|---|"]
    for stage, model, version in PROVENANCE:
        if model not in table.column_names:
            continue
        versions = (
            table.column(version).to_pylist()
            if version in table.column_names
            else [None] * table.num_rows
        )
        pairs = Counter(zip(table.column(model).to_pylist(), versions, strict=True))
        for (name, prompt), count in sorted(pairs.items(), key=lambda kv: -kv[1]):
            if name is not None:
                lines.append(f"| {stage} | {_cell(name)} | {_cell(prompt)} | {count:,} |")
    if len(lines) == 2:
        return "The set records no models or prompt versions."
    return "\n".join(lines)


def _settings(manifest: dict[str, Any]) -> str:
    """The generation settings each stage recorded in the bank's manifest (URLs masked)."""
    lines = []
    for stage, *_ in PROVENANCE:
        recorded = manifest.get(stage)
        if isinstance(recorded, dict) and "model" in recorded:
            cells = [recorded.get(k) for k in ("model", "endpoint", "temperature", "seed")]
            lines.append(f"| {stage} | " + " | ".join(_cell(c) for c in cells) + " |")
    if not lines:
        return ""
    head = "| stage | model | endpoint | temperature | seed |\n|---|---|---|---|---|\n"
    return "\n\nAs recorded in the bank's manifest:\n\n" + head + "\n".join(lines)


def _cell(value: Any) -> str:
    """A Markdown table cell: `-` for nothing, pipes escaped."""
    return "-" if value is None else str(value).replace("|", "\\|")


def _alignment(source: ExportSource) -> str:
    # imported here: the metrics module costs seconds to import, and only reports need it
    from personagen.evaluate.report import metrics_rows

    report = source.report
    if not report:
        return (
            "Not aligned: this is the whole scored set. `personagen evaluate` measures its "
            "distance from a human reference; `personagen align` chooses a matching subset."
        )
    info = report.get("info", {})
    lines = [
        f"- Reference: {info.get('reference')}",
        f"- Method: {info.get('method')} ({info.get('method_reason', '')}), n = {info.get('n')}",
    ]
    if info.get("query"):
        lines.append(f"- Query: {info['query']!r}; revised toward: {info.get('target') or '-'}")
    sets = report["sets"]
    shown = [name for name in ("before", "after") if name in sets]
    floor = f"floor (n={sets['after']['floor']['n']:,})"
    head = ["metric", *[cell for name in shown for cell in (name, "× floor")], floor]
    table = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, values in metrics_rows(report):
        cells = [_ratio(v) if i % 2 else _number(v) for i, v in enumerate(values)]
        table.append(f"| {_cell(label)} | " + " | ".join(cells) + " |")
    note = (
        "Each distance is also given as a multiple of its noise floor: what the same number of "
        "real people drawn from the reference score (1× = as close as real people get)."
    )
    return "\n".join(lines) + "\n\n" + "\n".join(table) + "\n\n" + note


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}×"


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _fields(rows: pa.Table) -> str:
    described = {
        "persona_id": "the persona's id in its bank (`<user>/<window>`, or `<set>/<id>`)",
        "narrative": "the persona (in an adapted set: revised toward the group)",
        "original_narrative": "the bank's narrative before the revision",
        "attributes": "age_range, gender, occupation, location, interests, values "
        "(null where the source gave no evidence)",
        **{t: f"{t}, 1-5 (the inventory's mean keyed response)" for t in TRAITS},
        "instrument": "the inventory the traits were measured with",
        "weight": "the persona's weight in the alignment",
    }
    return "\n".join(f"- `{name}`: {described[name]}" for name in rows.column_names)


def _limits(source: ExportSource) -> str:
    imported = source.manifest.get("import")
    origin = (
        f"The personas were imported from {imported.get('source')} as that set wrote them."
        if imported
        else MINED
    )
    lines = [origin, *LIMITS]
    table = source.table
    if "score_flags" in table.column_names:
        flagged = int(pc.sum(pc.greater(pc.list_value_length(table["score_flags"]), 0)).as_py())
        lines.append(
            f"{flagged:,} of {table.num_rows:,} personas carry score flags (acquiescence, low "
            "variance, failed items or traits their narrative contradicts): see the bank."
        )
    return "\n".join(f"- {line}" for line in lines)


MINED = (
    "The narratives were written by an LLM from real people's posts: they can carry the "
    "model's errors and biases, and PII redaction before mining is pattern-based, not proof."
)
LIMITS = (
    "The traits are the persona's own answers to a Big Five inventory, given by an LLM: they "
    "describe the persona, not the person who wrote the posts.",
    "Alignment matches the reference's Big Five distribution (and any --also columns), nothing "
    "else: demographics, opinions and behaviour are not matched unless stated above.",
    "A persona chosen several times (alignment with repeats) appears once per copy.",
)
INTENDED_USE = (
    "Agents for research simulations of populations (social-science and policy models) whose "
    "personality distribution should match real people's. Not for profiling or identifying "
    "individuals, not a substitute for survey data, and not for decisions about real people."
)
