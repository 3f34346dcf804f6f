"""Every command x every bad input that applies to it (issue 14): exit status 2, one line on
stderr that names the problem and the way out, no traceback, and nothing half-written (a new
`--out` does not exist afterwards, an existing one and the inputs are unchanged).

Each case fails before any LLM is asked and before Ray starts: LLM commands point at a closed
port (a case that reached the LLM would fail with another message), and `ray.init` fails the
test. The inputs are small files made once per module; `--out` is made fresh for every case.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from synthetic import clustered_vectors, vector_bank, write_histories, write_scored_bank

from personagen import TRAITS
from personagen.cli import cli
from personagen.io.bank import embedding_type, update_manifest, write_group

LLM = ["--set", "llm.base_url=http://127.0.0.1:9/v1"]
"""A closed port: a case that reached an LLM fails with a connection error, not its message."""


# ---------------------------------------------------------------------------------- inputs


def _truncate(path: Path) -> Path:
    """Cut a Parquet file in the middle (its footer lost)."""
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    return path


def _personas(path: Path, x: np.ndarray, ids: list[str] | None = None) -> Path:
    ids = ids or [f"p{i}" for i in range(len(x))]
    pq.write_table(
        pa.table({"persona_id": ids, **{t: x[:, j] for j, t in enumerate(TRAITS)}}), path
    )
    return path


def _jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _spec(path: Path, x: SimpleNamespace, **changes: Any) -> Path:
    """An experiment file (JSON is YAML) on the scored bank and the reference, with `changes`."""
    spec = {
        "n": 4,
        "references": [{"name": "r", "reference": str(x.ref)}],
        "banks": {"b": {"path": str(x.bank)}},
        "sets": [{"name": "s", "bank": "b"}],
        **changes,
    }
    path.write_text(json.dumps(spec), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def x(tmp_path_factory) -> Iterator[SimpleNamespace]:
    """The inputs, good and bad, every case draws on (none of them is written by a case)."""
    from personagen.commands.index import index
    from personagen.config import load_config

    root = tmp_path_factory.mktemp("inputs")
    x = SimpleNamespace(root=root, missing=root / "missing")
    x.hist = write_histories(root / "hist", 6)
    x.empty = root / "empty"
    x.empty.mkdir()
    rng = np.random.default_rng(0)
    traits = np.clip(rng.normal(3.4, 0.6, (50, len(TRAITS))), 1, 5)
    x.personas = _personas(root / "personas.parquet", traits)
    nan, high = traits.copy(), traits.copy()
    nan[3, 2], high[4, 0] = np.nan, 5.5
    x.nan = _personas(root / "nan.parquet", nan)
    x.high = _personas(root / "high.parquet", high)
    x.dup = _personas(root / "dup.parquet", traits, [*(f"p{i}" for i in range(49)), "p0"])
    x.trunc = _truncate(_personas(root / "truncated.parquet", traits))
    x.wrong = root / "wrong.parquet"
    pq.write_table(pa.table({"foo": [1, 2]}), x.wrong)
    y = np.clip(rng.normal(3.2, 0.6, (600, len(TRAITS))), 1, 5)
    x.ref = root / "ref.parquet"
    pq.write_table(pa.table({t: y[:, j] for j, t in enumerate(TRAITS)}), x.ref)
    x.cref = root / "countries.parquet"  # 3 of its 600 respondents are in east Asia
    countries = ["US"] * 597 + ["JP"] * 3
    pq.write_table(
        pa.table({**{t: y[:, j] for j, t in enumerate(TRAITS)}, "country": countries}), x.cref
    )
    x.bank = root / "bank"
    write_scored_bank(x.bank, 30)
    x.tbank = root / "tbank"  # its first personas and scores parts cut short
    shutil.copytree(x.bank, x.tbank)
    for group in ("personas", "scores"):
        _truncate(sorted((x.tbank / group).glob("*.parquet"))[0])
    x.vbank = root / "vbank"  # embedded with a model that is not here
    vector_bank(x.vbank, clustered_vectors(40, 16), parts=2)
    x.ubank = root / "ubank"  # the same, indexed (its manifest does not say where the model is)
    shutil.copytree(x.vbank, x.ubank)
    index(load_config(), x.ubank)
    x.ibank = root / "ibank"  # indexed, embedded with a fine-tuned model whose folder is gone
    shutil.copytree(x.vbank, x.ibank)
    gone = {"model": str(root / "gone-model"), "path": str(root / "gone-model")}
    update_manifest(x.ibank, embed={**gone, "backend": "torch", "max_seq_length": 128})
    index(load_config(), x.ibank)
    x.mbank = root / "mbank"  # embeddings of two models
    shutil.copytree(x.vbank, x.mbank)
    vectors = pa.array(clustered_vectors(2, 16, seed=3).reshape(-1), pa.float32())
    other = pa.FixedSizeListArray.from_arrays(vectors, 16).cast(embedding_type(16))
    embeddings = {"persona_id": ["u0/0", "u1/0"], "embedding": other, "embed_model": ["o@1"] * 2}
    write_group(x.mbank, "embeddings", pa.table(embeddings))
    x.ebank = root / "ebank"  # an embeddings part cut short
    shutil.copytree(x.vbank, x.ebank)
    _truncate(sorted((x.ebank / "embeddings").glob("*.parquet"))[0])
    x.nonutf8 = root / "latin1.jsonl"
    x.nonutf8.write_bytes(b'{"user_id": "u1", "text": "caf\xe9 au lait"}\n')
    x.badyaml = root / "bad.yaml"
    x.badyaml.write_text("llm: [unclosed\n  - : :\n", encoding="utf-8")
    x.afile = root / "a-file"
    x.afile.write_text("not a folder\n", encoding="utf-8")
    x.ro = root / "read-only"
    x.ro.mkdir()
    x.ro.chmod(0o555)
    reports = [
        {"user_id": f"u{i}", "posts": ["tea and work"], **dict.fromkeys(TRAITS, 3.0 + i / 10)}
        for i in range(12)
    ]
    x.sr_dup = _jsonl(root / "reports-dup.jsonl", [*reports, reports[0]])
    nan_report = {**reports[2], "openness": float("nan")}  # written as NaN
    x.sr_nan = _jsonl(root / "reports-nan.jsonl", [*reports[:2], nan_report])
    x.sr_wrong = _jsonl(root / "reports-no-traits.jsonl", [{"user_id": "u", "posts": ["x"]}])
    x.spec_bad = root / "experiment-bad.yaml"
    x.spec_bad.write_text("banks: [unclosed\n", encoding="utf-8")
    specs = {
        "unknown_ref": {"references": [{"name": "r", "reference": "missing-ref.parquet"}]},
        "unknown_group": {"references": [{"name": "r", "reference": "builtin:atlantis"}]},
        "small_ref": {
            "references": [{"name": "r", "reference": str(x.cref), "group": "east-asia"}]
        },
        "n0": {"n": 0},
        "instrument": {"instrument": "no-such-instrument"},
        "good": {},
    }
    x.spec = {k: _spec(root / f"experiment-{k}.yaml", x, **v) for k, v in specs.items()}
    yield x
    x.ro.chmod(0o755)


# ----------------------------------------------------------------------------------- cases


@dataclass(frozen=True)
class Case:
    command: str
    bad: str
    args: Callable[[SimpleNamespace, Path], list[Any]]
    """The command line, given the inputs and the `--out` path."""
    message: str
    """What the one line on stderr says (its problem and, where it has one, its way out)."""
    out: str = "new"
    """`--out`: new (a folder that does not exist), file (under a regular file), readonly
    (under a folder that cannot be written), existing (a folder holding a file)."""

    @property
    def id(self) -> str:
        return f"{self.command}:{self.bad}"


MISSING = "does not exist"
NOT_YAML = "is not valid YAML"
UNDER_FILE = "is a file, not a folder: choose another --out"
READ_ONLY = "is not writable: choose another --out"
DAMAGED_BANK = "cannot read the bank's part files in"
UNKNOWN_INSTRUMENT = "unknown instrument 'no-such-instrument'"
UNKNOWN_GROUP = "unknown group 'atlantis'; known groups: global"
SMALL_REF = "group 'east-asia' has 3 usable rows"
NOT_SCORED_WITH = "is not scored with ipip-neo-120 (it is with ipip-50)"


def _command(
    words: str, defaults: dict[str, Any], *changes: Any, tail: tuple[Any, ...] = ()
) -> Callable[[SimpleNamespace, Path], list[Any]]:
    """The command line `words`, its flags `defaults` changed or added to by `changes` (flag,
    value, flag, value...), then `tail`. A value `@name` is the input of that name (`@out`: the
    case's --out)."""
    flags = {**defaults, **dict(zip(changes[::2], changes[1::2], strict=True))}

    def args(x: SimpleNamespace, out: Path) -> list[Any]:
        def value(v: Any) -> Any:
            if isinstance(v, str) and v.startswith("@"):
                return out if v == "@out" else getattr(x, v[1:])
            return v

        words_ = [value(w) for w in words.split()]
        return [*words_, *(a for f, v in flags.items() for a in (f, value(v))), *map(value, tail)]

    return args


def _align(*changes: Any) -> Callable[[SimpleNamespace, Path], list[Any]]:
    """align --personas P --reference R --n 5 --out O, with `changes`."""
    defaults = {"--personas": "@personas", "--reference": "@ref", "--n": 5, "--out": "@out"}
    return _command("align", defaults, *changes)


def _evaluate(*changes: Any) -> Callable[[SimpleNamespace, Path], list[Any]]:
    """evaluate --personas P --reference R --out O, with `changes`."""
    defaults = {"--personas": "@personas", "--reference": "@ref", "--out": "@out"}
    return _command("evaluate", defaults, *changes)


def _adapt(*changes: Any, bank: str = "@ibank") -> Callable[[SimpleNamespace, Path], list[Any]]:
    """adapt BANK --query Q --no-revise --reference R --out O (LLM: the closed port), with
    `changes`."""
    defaults = {"--query": "parents in a city", "--reference": "@ref", "--out": "@out"}
    return _command(f"adapt {bank} --no-revise", defaults, *changes, tail=tuple(LLM))


CASES = [
    # config ---------------------------------------------------------------------------------
    Case(
        "config-show", "not YAML", lambda x, o: ["config", "show", "--config", x.badyaml], NOT_YAML
    ),
    # ingest ---------------------------------------------------------------------------------
    Case("ingest", "missing path", lambda x, o: ["ingest", x.missing, "--out", o], MISSING),
    Case(
        "ingest",
        "empty folder",
        lambda x, o: ["ingest", x.empty, "--out", o],
        "no input files (.json, .jsonl, .parquet, .xml) under",
    ),
    Case(
        "ingest",
        "truncated parquet",
        lambda x, o: ["ingest", x.trunc, "--out", o],
        "none of the 1 input Parquet files can be ingested",
    ),
    Case(
        "ingest",
        "wrong schema",
        lambda x, o: ["ingest", x.wrong, "--out", o],
        "lacks columns user_id and posts or text (has: foo)",
    ),
    Case(
        "ingest",
        "out under a file",
        lambda x, o: ["ingest", x.hist, "--out", o],
        UNDER_FILE,
        "file",
    ),
    Case(
        "ingest",
        "read-only out",
        lambda x, o: ["ingest", x.hist, "--out", o],
        READ_ONLY,
        "readonly",
    ),
    Case(
        "ingest",
        "not YAML",
        lambda x, o: ["ingest", x.hist, "--out", o, "--config", x.badyaml],
        NOT_YAML,
        "existing",
    ),
    # mine -----------------------------------------------------------------------------------
    Case("mine", "missing path", lambda x, o: ["mine", x.missing, "--out", o, *LLM], MISSING),
    Case(
        "mine",
        "empty folder",
        lambda x, o: ["mine", x.empty, "--out", o, *LLM],
        "no histories Parquet in",
    ),
    Case(
        "mine",
        "truncated parquet",
        lambda x, o: ["mine", x.trunc, "--out", o, *LLM],
        "not a histories Parquet file",
        "existing",
    ),
    Case(
        "mine",
        "wrong schema",
        lambda x, o: ["mine", x.wrong, "--out", o, *LLM],
        "histories lack columns history_id, user_id, window_id, posts",
    ),
    Case(
        "mine",
        "non-UTF-8 JSONL",
        lambda x, o: ["mine", x.nonutf8, "--out", o, *LLM],
        "go through `personagen ingest` first",
    ),
    Case(
        "mine",
        "out under a file",
        lambda x, o: ["mine", x.hist, "--out", o, *LLM],
        UNDER_FILE,
        "file",
    ),
    # judge ----------------------------------------------------------------------------------
    Case("judge", "missing path", lambda x, o: ["judge", x.missing, *LLM], MISSING),
    Case(
        "judge",
        "empty folder",
        lambda x, o: ["judge", x.empty, *LLM],
        "(run `personagen mine` first)",
    ),
    Case("judge", "truncated parquet", lambda x, o: ["judge", x.tbank, *LLM], DAMAGED_BANK),
    Case(
        "judge",
        "truncated histories",
        lambda x, o: ["judge", x.bank, "--histories", x.trunc, *LLM],
        "not a histories Parquet file",
    ),
    Case(
        "judge",
        "wrong schema",
        lambda x, o: ["judge", x.bank, "--histories", x.wrong, *LLM],
        "histories lack columns",
    ),
    # score ----------------------------------------------------------------------------------
    Case("score", "missing path", lambda x, o: ["score", x.missing, *LLM], MISSING),
    Case(
        "score",
        "empty folder",
        lambda x, o: ["score", x.empty, *LLM],
        "(run `personagen mine` first)",
    ),
    Case("score", "truncated parquet", lambda x, o: ["score", x.tbank, *LLM], DAMAGED_BANK),
    Case(
        "score",
        "unknown instrument",
        lambda x, o: ["score", x.bank, "--instrument", "no-such-instrument", *LLM],
        UNKNOWN_INSTRUMENT,
    ),
    # consistency ----------------------------------------------------------------------------
    Case(
        "consistency",
        "empty folder",
        lambda x, o: ["consistency", x.empty, *LLM],
        "has no scores yet (run `personagen score` first)",
    ),
    Case(
        "consistency",
        "truncated parquet",
        lambda x, o: ["consistency", x.tbank, *LLM],
        DAMAGED_BANK,
    ),
    # reliability ----------------------------------------------------------------------------
    Case(
        "reliability",
        "empty folder",
        lambda x, o: ["reliability", x.empty],
        "has no scores yet (run `personagen score` first)",
    ),
    Case("reliability", "truncated parquet", lambda x, o: ["reliability", x.tbank], DAMAGED_BANK),
    Case(
        "reliability",
        "unknown instrument",
        lambda x, o: ["reliability", x.bank, "--instrument", "no-such-instrument"],
        UNKNOWN_INSTRUMENT,
    ),
    Case(
        "reliability",
        "missing path",
        lambda x, o: ["reliability", x.bank, "--human", x.missing],
        MISSING,
    ),
    # build ----------------------------------------------------------------------------------
    Case(
        "build",
        "missing path",
        lambda x, o: ["build", "--input", x.missing, "--out", o, *LLM],
        MISSING,
    ),
    Case(
        "build",
        "empty folder",
        lambda x, o: ["build", "--input", x.empty, "--out", o, *LLM],
        "no input files",
    ),
    Case(
        "build",
        "truncated parquet",
        lambda x, o: ["build", "--input", x.trunc, "--out", o, *LLM],
        "none of the 1 input Parquet files can be ingested",
    ),
    Case(
        "build",
        "wrong schema",
        lambda x, o: ["build", "--dry-run", "--input", x.wrong, "--out", o, *LLM],
        "lacks columns user_id and posts or text",
    ),
    Case(
        "build",
        "out under a file",
        lambda x, o: ["build", "--input", x.hist, "--out", o, *LLM],
        UNDER_FILE,
        "file",
    ),
    Case("demo", "out under a file", lambda x, o: ["demo", "--out", o, *LLM], UNDER_FILE, "file"),
    # align ----------------------------------------------------------------------------------
    Case(
        "align",
        "missing path",
        _align("--personas", "@missing"),
        "no persona bank or Parquet file at",
    ),
    Case("align", "empty folder", _align("--personas", "@empty"), "lack column(s) persona_id"),
    Case(
        "align",
        "truncated parquet",
        _align("--personas", "@trunc"),
        "Parquet magic bytes not found in footer. Either the file is corrupted or this is not a "
        "parquet file.: give a Parquet file or a bank folder",
    ),
    Case("align", "wrong schema", _align("--personas", "@wrong"), "lack column(s) persona_id"),
    Case(
        "align",
        "wrong reference schema",
        _align("--reference", "@wrong"),
        "lacks trait columns openness",
    ),
    Case(
        "align",
        "NaN trait",
        _align("--personas", "@nan"),
        "1 rows have a missing or NaN trait (first: p3): score them again",
        "existing",
    ),
    Case(
        "align",
        "out-of-range trait",
        _align("--personas", "@high"),
        "rows have a trait outside 1-5",
    ),
    Case(
        "align",
        "duplicate ids",
        _align("--personas", "@dup"),
        "duplicate persona_id values, e.g. ['p0']: give each persona one row",
    ),
    Case("align", "n <= 0", _align("--n", 0), "0 is not in the range x>=1"),
    Case(
        "align",
        "n > candidates",
        _align("--n", 51),
        "cannot choose 51 distinct personas from 50 candidates (use --replace",
    ),
    Case(
        "align",
        "unknown reference",
        _align("--reference", "missing-ref.parquet"),
        "reference file not found",
    ),
    Case("align", "unknown group", _align("--reference", "builtin:atlantis"), UNKNOWN_GROUP),
    Case(
        "align",
        "unknown group flag",
        _align("--reference", "@cref", "--group", "atlantis"),
        UNKNOWN_GROUP,
    ),
    Case(
        "align",
        "unknown instrument",
        _align("--personas", "@bank", "--instrument", "ipip-neo-120"),
        NOT_SCORED_WITH,
    ),
    Case(
        "align",
        "reference too small",
        _align("--reference", "@cref", "--group", "east-asia"),
        SMALL_REF,
    ),
    Case("align", "truncated bank part", _align("--personas", "@tbank"), DAMAGED_BANK),
    Case("align", "out under a file", _align(), UNDER_FILE, "file"),
    Case("align", "read-only out", _align(), READ_ONLY, "readonly"),
    # evaluate -------------------------------------------------------------------------------
    Case(
        "evaluate",
        "truncated parquet",
        _evaluate("--personas", "@trunc"),
        "cannot read personas from",
    ),
    Case("evaluate", "NaN trait", _evaluate("--personas", "@nan"), "missing or NaN trait"),
    Case("evaluate", "duplicate ids", _evaluate("--personas", "@dup"), "duplicate persona_id"),
    Case(
        "evaluate",
        "unknown reference",
        _evaluate("--reference", "missing-ref.parquet"),
        "reference file not found",
    ),
    Case("evaluate", "unknown group", _evaluate("--reference", "builtin:atlantis"), UNKNOWN_GROUP),
    Case(
        "evaluate",
        "reference too small",
        _evaluate("--reference", "@cref", "--group", "east-asia"),
        SMALL_REF,
    ),
    Case(
        "evaluate",
        "unknown instrument",
        _evaluate("--personas", "@bank", "--instrument", "ipip-neo-120"),
        NOT_SCORED_WITH,
    ),
    Case("evaluate", "out under a file", _evaluate(), UNDER_FILE, "file"),
    # adapt ----------------------------------------------------------------------------------
    Case("adapt", "missing path", _adapt(bank="@missing"), MISSING),
    Case("adapt", "empty folder", _adapt(bank="@empty"), "no index in"),
    Case(
        "adapt",
        "another model's bank",
        _adapt(),
        "gone-model' is neither a folder nor in the local Hugging Face cache",
    ),
    Case("adapt", "n <= 0", _adapt("--n", 0), "0 is not in the range x>=1"),
    Case(
        "adapt",
        "n > candidates",
        _adapt("--n", 20, "-k", 10),
        "cannot choose 20 distinct personas from at most k=10 candidates (raise -k",
    ),
    Case(
        "adapt",
        "unknown reference",
        _adapt("--reference", "missing-ref.parquet"),
        "reference file not found",
    ),
    Case("adapt", "unknown group", _adapt("--reference", "builtin:atlantis"), UNKNOWN_GROUP),
    Case(
        "adapt",
        "reference too small",
        _adapt("--reference", "@cref", "--group", "east-asia"),
        SMALL_REF,
    ),
    Case(
        "adapt",
        "unknown instrument",
        _adapt("--set", "score.instrument=no-such-instrument"),
        UNKNOWN_INSTRUMENT,
    ),
    Case("adapt", "out under a file", _adapt(), UNDER_FILE, "file"),
    # embed / index / search -----------------------------------------------------------------
    Case("embed", "missing path", lambda x, o: ["embed", x.missing], MISSING),
    Case("embed", "empty folder", lambda x, o: ["embed", x.empty], "no personas in"),
    Case("embed", "truncated parquet", lambda x, o: ["embed", x.tbank], DAMAGED_BANK),
    Case(
        "embed",
        "another model's bank",
        lambda x, o: ["embed", x.vbank],
        "the bank is embedded with synthetic@000000000000, not all-MiniLM-L6-v2",
    ),
    Case("index", "empty folder", lambda x, o: ["index", x.empty], "no embeddings in"),
    Case("index", "truncated parquet", lambda x, o: ["index", x.ebank], DAMAGED_BANK),
    Case(
        "index",
        "another model's bank",
        lambda x, o: ["index", x.mbank],
        "embeddings of several models in",
    ),
    Case("search", "missing path", lambda x, o: ["search", x.missing, "tea"], MISSING),
    Case("search", "empty folder", lambda x, o: ["search", x.empty, "tea"], "no index in"),
    Case(
        "search",
        "another model's bank",
        lambda x, o: ["search", x.ibank, "tea"],
        "was built with synthetic@000000000000, which cannot be loaded here",
    ),
    Case(
        "search",
        "another model's bank (unrecorded)",
        lambda x, o: ["search", x.ubank, "tea"],
        "(its folder is not recorded): re-embed the bank with a model you have",
    ),
    Case(
        "search",
        "n <= 0",
        lambda x, o: ["search", x.ibank, "tea", "-k", 0],
        "0 is not in the range x>=1",
    ),
    # train-embedder -------------------------------------------------------------------------
    Case(
        "train-embedder",
        "empty folder",
        lambda x, o: ["train-embedder", x.empty, "--out", o, *LLM],
        "no index in",
    ),
    Case(
        "train-embedder",
        "out under a file",
        lambda x, o: ["train-embedder", x.ibank, "--out", o, *LLM],
        UNDER_FILE,
        "file",
    ),
    # export ---------------------------------------------------------------------------------
    Case(
        "export",
        "missing path",
        lambda x, o: ["export", x.missing, "--to", "jsonl", "--out", o],
        MISSING,
    ),
    Case(
        "export",
        "empty folder",
        lambda x, o: ["export", x.empty, "--to", "csv", "--out", o],
        "no persona set at",
    ),
    Case(
        "export",
        "truncated parquet",
        lambda x, o: ["export", x.trunc, "--to", "jsonl", "--out", o],
        "cannot read personas from",
    ),
    Case(
        "export",
        "wrong schema",
        lambda x, o: ["export", x.wrong, "--to", "hf", "--out", o],
        "lack column(s) persona_id",
    ),
    Case(
        "export",
        "NaN trait",
        lambda x, o: ["export", x.nan, "--to", "oasis", "--out", o],
        "missing or NaN trait",
    ),
    Case(
        "export",
        "duplicate ids",
        lambda x, o: ["export", x.dup, "--to", "jsonl", "--out", o],
        "duplicate persona_id",
    ),
    Case(
        "export",
        "unknown instrument",
        lambda x, o: [
            "export",
            x.bank,
            "--to",
            "jsonl",
            "--instrument",
            "ipip-neo-120",
            "--out",
            o,
        ],
        NOT_SCORED_WITH,
    ),
    Case(
        "export",
        "truncated bank part",
        lambda x, o: ["export", x.tbank, "--to", "csv", "--out", o],
        DAMAGED_BANK,
    ),
    Case(
        "export",
        "out under a file",
        lambda x, o: ["export", x.bank, "--to", "jsonl", "--out", o],
        UNDER_FILE,
        "file",
    ),
    # import ---------------------------------------------------------------------------------
    Case("import", "missing path", lambda x, o: ["import", x.missing, "--out", o], MISSING),
    Case(
        "import",
        "non-UTF-8 JSONL",
        lambda x, o: ["import", x.nonutf8, "--out", o],
        "has no row that can be read (line 1: not UTF-8",
    ),
    Case(
        "import",
        "truncated parquet",
        lambda x, o: ["import", x.trunc, "--out", o],
        "not a parquet file.: restore the file, or give it as JSONL or CSV",
    ),
    Case(
        "import",
        "wrong schema",
        lambda x, o: ["import", x.wrong, "--out", o],
        "name its text with --text-column (its columns: foo)",
    ),
    Case(
        "import",
        "out under a file",
        lambda x, o: ["import", x.personas, "--out", o],
        UNDER_FILE,
        "file",
    ),
    # baseline -------------------------------------------------------------------------------
    Case(
        "baseline",
        "n <= 0",
        lambda x, o: ["baseline", "--kind", "llm-personas", "--n", 0, "--out", o, *LLM],
        "--n must be at least 1, not 0",
    ),
    Case(
        "baseline",
        "missing path",
        lambda x, o: ["baseline", "--kind", "random", "--n", 5, "--from", x.missing, "--out", o],
        MISSING,
    ),
    Case(
        "baseline",
        "empty folder",
        lambda x, o: ["baseline", "--kind", "random", "--n", 5, "--from", x.empty, "--out", o],
        "to draw a random set from: give a bank with --from",
    ),
    Case(
        "baseline",
        "n > candidates",
        lambda x, o: ["baseline", "--kind", "random", "--n", 31, "--from", x.bank, "--out", o],
        "--n 31 is more than the 30 personas",
    ),
    Case(
        "baseline",
        "truncated parquet",
        lambda x, o: ["baseline", "--kind", "random", "--n", 5, "--from", x.tbank, "--out", o],
        DAMAGED_BANK,
    ),
    Case(
        "baseline",
        "unknown instrument",
        lambda x, o: [
            "baseline",
            "--kind",
            "no-persona",
            "--n",
            5,
            "--instrument",
            "no-such-instrument",
            "--out",
            o,
            *LLM,
        ],
        UNKNOWN_INSTRUMENT,
    ),
    Case(
        "baseline",
        "out under a file",
        lambda x, o: ["baseline", "--kind", "random", "--n", 5, "--from", x.bank, "--out", o],
        UNDER_FILE,
        "file",
    ),
    # experiment -----------------------------------------------------------------------------
    Case(
        "experiment",
        "missing path",
        lambda x, o: ["experiment", x.missing, "--out", o, *LLM],
        MISSING,
    ),
    Case(
        "experiment",
        "not YAML",
        lambda x, o: ["experiment", x.spec_bad, "--out", o, *LLM],
        "is not YAML",
    ),
    Case(
        "experiment",
        "unknown reference",
        lambda x, o: ["experiment", x.spec["unknown_ref"], "--out", o, *LLM],
        "reference file not found",
    ),
    Case(
        "experiment",
        "unknown group",
        lambda x, o: ["experiment", x.spec["unknown_group"], "--out", o, *LLM],
        UNKNOWN_GROUP,
    ),
    Case(
        "experiment",
        "reference too small",
        lambda x, o: ["experiment", x.spec["small_ref"], "--out", o, *LLM],
        SMALL_REF,
    ),
    Case(
        "experiment",
        "n <= 0",
        lambda x, o: ["experiment", x.spec["n0"], "--out", o, *LLM],
        "n: Input should be greater than or equal to 2",
    ),
    Case(
        "experiment",
        "unknown instrument",
        lambda x, o: ["experiment", x.spec["instrument"], "--out", o, *LLM],
        "no-such-instrument': neither built in",
    ),
    Case(
        "experiment",
        "out under a file",
        lambda x, o: ["experiment", x.spec["good"], "--out", o, *LLM],
        UNDER_FILE,
        "file",
    ),
    # validate-scorer ------------------------------------------------------------------------
    Case(
        "validate-scorer",
        "non-UTF-8 JSONL",
        lambda x, o: ["validate-scorer", "--histories", x.nonutf8, "--out", o, *LLM],
        "is not UTF-8 (a byte 0xe9): save it as UTF-8 JSON lines",
    ),
    Case(
        "validate-scorer",
        "duplicate ids",
        lambda x, o: ["validate-scorer", "--histories", x.sr_dup, "--out", o, *LLM],
        "user 'u0' is on lines 1 and 13: give each user one line",
    ),
    Case(
        "validate-scorer",
        "NaN trait",
        lambda x, o: ["validate-scorer", "--histories", x.sr_nan, "--out", o, *LLM],
        "line 3: openness is NaN, not a number",
    ),
    Case(
        "validate-scorer",
        "wrong schema",
        lambda x, o: ["validate-scorer", "--histories", x.sr_wrong, "--out", o, *LLM],
        "has no trait columns openness",
    ),
    Case(
        "validate-scorer",
        "unknown instrument",
        lambda x, o: ["validate-scorer", "--instrument", "no-such-instrument", "--out", o, *LLM],
        UNKNOWN_INSTRUMENT,
    ),
    Case(
        "validate-scorer",
        "n <= 0",
        lambda x, o: ["validate-scorer", "--limit", 0, "--out", o, *LLM],
        "0 is not in the range x>=3",
    ),
    Case(
        "validate-scorer",
        "out under a file",
        lambda x, o: ["validate-scorer", "--out", o, *LLM],
        UNDER_FILE,
        "file",
    ),
    # reference show -------------------------------------------------------------------------
    Case(
        "reference-show",
        "unknown reference",
        lambda x, o: ["reference", "show", "missing-ref.parquet"],
        "reference file not found",
    ),
    Case(
        "reference-show",
        "unknown group",
        lambda x, o: ["reference", "show", "builtin:atlantis"],
        UNKNOWN_GROUP,
    ),
    Case(
        "reference-show",
        "reference too small",
        lambda x, o: ["reference", "show", x.cref, "--group", "east-asia"],
        SMALL_REF,
    ),
    Case(
        "reference-show",
        "truncated parquet",
        lambda x, o: ["reference", "show", x.trunc],
        "not a parquet file.: give a Parquet or CSV file of trait columns",
    ),
]


# ------------------------------------------------------------------------------------ test


@pytest.fixture(autouse=True)
def _no_ray(monkeypatch):
    """Every check comes before Ray: a case that starts it fails."""
    import ray

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("Ray was started before the bad input was refused")

    monkeypatch.setattr(ray, "init", refuse)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)


def _state(folder: Path) -> dict[str, tuple[int, int] | None]:
    """What a folder holds (files by size and modification time; folders), bar bank locks."""
    if not folder.exists():
        return {}
    state: dict[str, tuple[int, int] | None] = {}
    for path in sorted(folder.rglob("*")):
        if path.name == ".lock":
            continue
        stat = path.stat()
        state[str(path.relative_to(folder))] = (
            None if path.is_dir() else (stat.st_size, stat.st_mtime_ns)
        )
    return state


def _out(case: Case, x: SimpleNamespace, tmp_path: Path) -> Path:
    if case.out == "file":
        return x.afile / "out"
    if case.out == "readonly":
        if os.access(x.ro, os.W_OK):
            pytest.skip("a read-only folder is writable here (running as root)")
        return x.ro / "out"
    if case.out == "existing":
        out = tmp_path / "out"
        out.mkdir()
        (out / "keep.txt").write_text("an earlier run's\n", encoding="utf-8")
        return out
    return tmp_path / "new" / "out"  # its parent is made for it too, and must go with it


def test_the_matrix_covers_every_command():
    covered = {case.command.removesuffix("-show") for case in CASES}
    assert set(cli.commands) == covered


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_bad_input_is_one_line_exit_2_and_nothing_written(case: Case, x, tmp_path):
    out = _out(case, x, tmp_path)
    inputs, before = _state(x.root), _state(out)
    result = CliRunner().invoke(
        cli, [str(a) for a in case.args(x, out)], prog_name="personagen", catch_exceptions=False
    )
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2, result.output
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    assert lines[0].startswith("error: ") and case.message in lines[0], lines[0]
    if case.out == "new":
        assert not out.parent.exists(), sorted(map(str, out.parent.rglob("*")))
    else:
        assert _state(out) == before
    assert _state(x.root) == inputs
