"""`personagen experiment EXPERIMENT.yaml --out DIR`: the paper's comparison table, one command.

1. Banks: each bank of the experiment file is made in DIR/banks/<name> (`personagen build`,
   `baseline` or `import`) or used where it is (`path`), then scored on the experiment's
   instrument and on the held-out instrument (only what is missing is asked: every step
   resumes, so a re-run costs nothing it has done).
2. Sets, per reference: a bank's personas as `select` says: all of them, n at random, n aligned
   to the reference (`personagen align`, DIR/sets/<set>/<reference>) or a group-adapted set
   (`personagen adapt`, same place).
3. The table (`personagen.evaluate.comparison`): every distance x its noise floor, on the
   instrument and on the held-out one, % error reduction against the baseline set, trait
   coverage and uniformity, narrative spread (embedded with `embed.model`).

DIR gets report.json, report.html and manifest.json (the experiment file as read, the
configuration, package versions, each bank's origin and models).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from personagen import TRAITS
from personagen.commands.adapt import adapt
from personagen.commands.align import align
from personagen.commands.baseline import baseline
from personagen.commands.build import build
from personagen.commands.demo import example_histories
from personagen.commands.experiment_spec import (
    BUNDLED,
    BankSpec,
    ExperimentSpec,
    ReferenceSpec,
    SetSpec,
    load_spec,
    resolve,
)
from personagen.commands.import_set import import_set
from personagen.commands.reference import load
from personagen.commands.score import score
from personagen.config import Config
from personagen.errors import PersonagenError
from personagen.evaluate.comparison import SetData, Settings, compare_sets
from personagen.evaluate.comparison_report import write_experiment_report
from personagen.index.embedder import Embedder, load_embedder
from personagen.io.bank import KEY, Bank, scores_of
from personagen.io.lock import check_out
from personagen.io.personas import read_personas
from personagen.io.reference import Reference
from personagen.psychometrics.instruments import get_instrument
from personagen.runtime.provenance import package_versions
from personagen.runtime.summary import Summary


def experiment(cfg: Config, spec_path: str | Path, out: str | Path) -> Summary:
    """Run the experiment file `spec_path` into `out` (see the module docstring)."""
    started = time.perf_counter()
    spec, folder = load_spec(spec_path)
    cfg = cfg.updated(spec.settings)
    out = Path(out).resolve()
    instruments = [resolve(folder, spec.instrument or cfg.score.instrument)]
    if spec.held_out is not None:
        instruments.append(resolve(folder, spec.held_out.instrument))
    ids = [get_instrument(i).id for i in instruments]
    check_out(out)
    loaded = [_references(cfg, folder, spec, ref_spec) for ref_spec in spec.references]
    banks = prepare_banks(cfg, spec, folder, out / "banks", instruments)
    embedder = load_embedder(cfg.embed)
    notes: list[str] = []
    references: dict[str, Any] = {}
    shown: dict[str, dict[str, np.ndarray]] = {}
    settings = Settings(
        seed=cfg.seed,
        floor_repeats=cfg.evaluate.floor_repeats,
        energy_max_rows=cfg.evaluate.energy_max_rows,
        n_projections=cfg.evaluate.sliced_projections,
    )
    for ref_spec, (reference, held_spec, held_reference) in zip(
        spec.references, loaded, strict=True
    ):
        sets = [s for s in spec.sets if s.references is None or ref_spec.name in s.references]
        data = []
        for set_spec in sets:
            where = out / "sets" / set_spec.name / ref_spec.name
            chosen = draw(cfg, set_spec, banks[set_spec.bank], reference, spec.n, ids[0], where)
            data.append(set_data(set_spec, chosen, banks[set_spec.bank], ids, embedder, notes))
        baseline_set = spec.baseline if spec.baseline in [s.name for s in sets] else None
        references[ref_spec.name] = compare_sets(
            data,
            reference.trait_matrix(),
            held_reference.trait_matrix() if held_reference is not None else None,
            baseline=baseline_set,
            settings=settings,
        ) | {"reference": reference.describe(), "held_out_reference": held_spec}
        shown[ref_spec.name] = {"reference": reference.trait_matrix()}
        shown[ref_spec.name].update({d.name: d.traits for d in data})
    info = {
        "instrument": ids[0],
        "held_out_instrument": ids[1] if len(ids) > 1 else None,
        "baseline": spec.baseline,
        "n": spec.n,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "notes": notes,
    }
    document = {"info": info, "references": references}
    json_path, html_path = write_experiment_report(out, document, shown)
    write_manifest(out, cfg, spec, Path(spec_path), banks)
    counts = Counter(
        {"banks": len(banks), "sets": len(spec.sets), "references": len(spec.references)}
    )
    summary = Summary(
        "experiment",
        counts,
        rows=[("banks", "banks"), ("sets", "sets"), ("references", "references")],
    )
    summary.outputs = {"report": document, "json": json_path, "html": html_path}
    summary.lines = [*notes, f"report: {html_path}"]
    summary.wall_s = time.perf_counter() - started
    return summary


def _references(
    cfg: Config, folder: Path, spec: ExperimentSpec, ref_spec: ReferenceSpec
) -> tuple[Reference, str | None, Reference | None]:
    """A reference of the experiment, its held-out spec and reference: loaded (and so checked)
    before any bank is made."""
    reference = load(
        cfg, resolve(folder, ref_spec.reference), group=ref_spec.group, countries=ref_spec.countries
    )
    held_spec = ref_spec.held_out or (spec.held_out.reference if spec.held_out else None)
    held_reference = load(cfg, resolve(folder, held_spec)) if held_spec else None
    return reference, held_spec, held_reference


def prepare_banks(
    cfg: Config, spec: ExperimentSpec, folder: Path, root: Path, instruments: list[str]
) -> dict[str, Path]:
    """Every bank made (or found) and scored on `instruments`; random draws after their source,
    so they take its scores along."""
    paths: dict[str, Path] = {}
    for name, bank in sorted(spec.banks.items(), key=lambda item: item[1].source is not None):
        path = Path(resolve(folder, bank.path)) if bank.path else root / name
        make_bank(cfg, bank, folder, path, paths)
        for instrument in instruments:
            score(cfg.updated({"score.instrument": instrument}), path)
        paths[name] = path
    return paths


def make_bank(cfg: Config, bank: BankSpec, folder: Path, path: Path, made: dict[str, Path]) -> None:
    """Make (or resume) one bank of the experiment at `path`; a `path` bank must exist."""
    if bank.path is not None:
        if not (path / "personas").is_dir():
            raise PersonagenError(f"no persona bank at {path} (banks: path)")
    elif bank.build is not None:
        histories = example_histories() if bank.build == BUNDLED else resolve(folder, bank.build)
        updates = {
            "build.input": str(histories),
            "build.align.enabled": False,
            "build.adapt.enabled": False,
        }
        build(cfg.updated(updates), path)
    elif bank.baseline is not None:
        source = made[bank.source] if bank.source is not None else None
        baseline(cfg, bank.baseline, bank.n or 0, path, source=source)
    else:
        import_set(cfg, resolve(folder, str(bank.import_)), path, fmt=bank.format)


def draw(
    cfg: Config,
    set_spec: SetSpec,
    bank: Path,
    reference: Reference,
    n: int,
    instrument: str,
    where: Path,
) -> pa.Table:
    """The personas of one set for one reference (rows with id, traits and narrative)."""
    if set_spec.select == "adapt":
        query = set_spec.query or ""
        adapt(cfg.updated({"adapt.n": n}), bank, query, reference, where, overwrite=True)
        return pq.read_table(where / "personas.parquet")
    personas = read_personas(bank, instrument=instrument)
    if set_spec.select == "all":
        return personas.table
    if set_spec.select == "random":
        rows = personas.table.num_rows
        if n > rows:
            raise PersonagenError(
                f"set {set_spec.name!r}: n={n} is more than the {rows:,} scored personas of "
                f"{bank}: lower n"
            )
        rng = np.random.default_rng(cfg.seed)
        return personas.table.take(pa.array(np.sort(rng.choice(rows, n, replace=False))))
    method = {"align.method": set_spec.method} if set_spec.method else {}
    align(cfg.updated(method), personas, reference, n, where)
    return pq.read_table(where / "personas.parquet")


def set_data(
    set_spec: SetSpec,
    chosen: pa.Table,
    bank: Path,
    instruments: list[str],
    embedder: Embedder,
    notes: list[str],
) -> SetData:
    """What the comparison needs of a drawn set: its traits, the held-out instrument's traits of
    the same personas (not for adapted sets, whose revised personas answered anew), and its
    narratives' embeddings."""
    traits = np.column_stack([chosen.column(t).to_numpy(zero_copy_only=False) for t in TRAITS])
    held = None
    if len(instruments) > 1 and set_spec.select == "adapt":
        notes.append(
            f"set {set_spec.name}: adapted personas were revised and answered anew; their "
            f"{instruments[1]} scores would be the originals', so the held-out columns are empty"
        )
    elif len(instruments) > 1:
        held, missing = held_out_traits(bank, instruments[1], chosen.column(KEY).to_pylist())
        if missing:
            notes.append(
                f"set {set_spec.name}: {missing} of {chosen.num_rows} personas have no "
                f"{instruments[1]} scores (left out of the held-out columns)"
            )
    texts = narratives(chosen)
    embeddings = embedder.encode(texts) if len(texts) > 1 else None
    return SetData(set_spec.name, traits.astype(np.float64), held, embeddings)


def held_out_traits(bank: Path, instrument: str, ids: list[str]) -> tuple[np.ndarray, int]:
    """(traits of `ids` on `instrument`, one row per id that has them, repeats kept; how many
    ids have none)."""
    scores = scores_of(bank, instrument, [KEY, *TRAITS])
    row_of = {pid: i for i, pid in enumerate(scores.column(KEY).to_pylist())}
    rows = [row_of[pid] for pid in ids if pid in row_of]
    x = np.column_stack([scores.column(t).to_numpy(zero_copy_only=False) for t in TRAITS])
    x = x[rows].astype(np.float64)
    return x[~np.isnan(x).any(axis=1)], len(ids) - len(rows)


def narratives(chosen: pa.Table) -> list[str]:
    """The set's narratives as written (an adapted set's revisions), empty ones left out."""
    column = "revised_narrative" if "revised_narrative" in chosen.column_names else "narrative"
    if column not in chosen.column_names:
        return []
    texts = chosen.column(column).to_pylist()
    if column == "revised_narrative":
        originals = chosen.column("narrative").to_pylist()
        texts = [t or o for t, o in zip(texts, originals, strict=True)]
    return [t for t in texts if t and t.strip()]


def write_manifest(
    out: Path, cfg: Config, spec: ExperimentSpec, spec_path: Path, banks: dict[str, Path]
) -> Path:
    """DIR/manifest.json: what the table was made from."""
    raw = spec_path.read_bytes()
    manifest = {
        "experiment_file": str(spec_path.resolve()),
        "experiment_sha256": hashlib.sha256(raw).hexdigest(),
        "experiment": spec.model_dump(mode="json", by_alias=True, exclude_none=True),
        "config": cfg.masked(),
        "packages": package_versions(),
        "banks": {name: _bank_record(path) for name, path in banks.items()},
    }
    path = out / "manifest.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def _bank_record(path: Path) -> dict[str, Any]:
    manifest = Bank(path).manifest()
    keep = ("origin", "baseline", "import", "inputs", "llm", "score", "mine", "judge", "embed")
    return {"path": str(path), **{k: manifest[k] for k in keep if k in manifest}}
