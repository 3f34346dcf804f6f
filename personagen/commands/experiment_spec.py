"""The experiment file of `personagen experiment`: which banks, which sets, against whom.

    n: 100                          # personas per drawn or aligned set
    instrument: ipip-50             # the traits sets are aligned and compared on
    held_out:                       # optional: the out-of-distribution check
      instrument: spi:/data/sapa-spi           # scored on every bank a set draws from
      reference: spi:/data/sapa-spi/spi.csv    # that instrument's own human data
    references:
      - {name: global, reference: "builtin:global"}
      - {name: east-asia, reference: "builtin:global", group: east-asia}
    banks:                          # made in OUT/banks/<name> unless `path` names one
      mined: {build: bundled}       # `personagen build` on histories (bundled: the examples)
      written: {baseline: llm-personas, n: 40}
      bare: {baseline: no-persona, n: 40}
      hub: {import: personas.jsonl}
      mine: {path: runs/bank}       # an existing bank, used where it is
    sets:
      - {name: mined, bank: mined, select: random}
      - {name: llm-personas, bank: written}            # select: all (the default)
      - {name: aligned-ot, bank: mined, select: align, method: ot}
      - {name: adapted, bank: mined, select: adapt, query: "young parents", references: [east-asia]}
    baseline: llm-personas          # the set whose error the others reduce
    settings: {llm.concurrency: 8}  # personagen configuration keys for every step

Relative paths are read from the experiment file's folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from personagen.errors import PersonagenError

BUNDLED = "bundled"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class BankSpec(_Strict):
    """How a bank is made: exactly one of `path`, `build`, `baseline`, `import`."""

    path: str | None = Field(None, description="an existing bank, used (and scored) where it is")
    build: str | None = Field(None, description="histories to build from; bundled = examples")
    baseline: Literal["llm-personas", "no-persona", "random"] | None = None
    n: int | None = Field(None, ge=1, description="baseline: personas (respondents)")
    source: str | None = Field(None, alias="from", description="random baseline: a bank's name")
    import_: str | None = Field(None, alias="import", description="a persona set file to import")
    format: str = Field("auto", description="import: the file's schema (see personagen import)")

    @model_validator(mode="after")
    def _one_way(self) -> BankSpec:
        ways = [w for w in ("path", "build", "baseline", "import_") if getattr(self, w)]
        if len(ways) != 1:
            raise ValueError("give exactly one of path, build, baseline, import")
        if self.baseline is not None and self.n is None:
            raise ValueError("a baseline bank needs n")
        if (self.baseline == "random") != (self.source is not None):
            raise ValueError("`from` names the bank of a random baseline (and only of one)")
        return self


class SetSpec(_Strict):
    """A persona set: personas of a bank, chosen as `select` says, per reference."""

    name: str
    bank: str
    select: Literal["all", "random", "align", "adapt"] = "all"
    method: Literal["auto", "is", "ot", "is+ot"] | None = Field(
        None, description="align: the method (unset: align.method)"
    )
    query: str | None = Field(None, description="adapt: who to retrieve")
    references: list[str] | None = Field(None, description="only these references (unset: all)")

    @model_validator(mode="after")
    def _query_for_adapt(self) -> SetSpec:
        if (self.select == "adapt") != (self.query is not None):
            raise ValueError("`query` goes with select: adapt (and only with it)")
        if self.method is not None and self.select != "align":
            raise ValueError("`method` goes with select: align")
        return self


class ReferenceSpec(_Strict):
    name: str
    reference: str = Field(description="as `personagen align --reference`")
    group: str | None = None
    countries: list[str] | None = None
    held_out: str | None = Field(
        None, description="this reference's held-out human data (unset: held_out.reference)"
    )


class HeldOutSpec(_Strict):
    instrument: str
    reference: str


class ExperimentSpec(_Strict):
    n: int = Field(100, ge=2)
    instrument: str | None = Field(None, description="unset: score.instrument")
    held_out: HeldOutSpec | None = None
    references: list[ReferenceSpec] = Field(min_length=1)
    banks: dict[str, BankSpec] = Field(min_length=1)
    sets: list[SetSpec] = Field(min_length=1)
    baseline: str | None = None
    settings: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _names_resolve(self) -> ExperimentSpec:
        sets = [s.name for s in self.sets]
        refs = [r.name for r in self.references]
        for what, names in (("set", sets), ("reference", refs)):
            repeated = sorted({n for n in names if names.count(n) > 1})
            if repeated:
                raise ValueError(f"{what} names must differ: {', '.join(repeated)}")
        for s in self.sets:
            if s.bank not in self.banks:
                raise ValueError(f"set {s.name!r} draws from unknown bank {s.bank!r}")
            unknown = sorted(set(s.references or []) - set(refs))
            if unknown:
                raise ValueError(f"set {s.name!r} names unknown references {unknown}")
        for name, bank in self.banks.items():
            if bank.source is not None and bank.source not in self.banks:
                raise ValueError(f"bank {name!r} is drawn from unknown bank {bank.source!r}")
            if bank.source is not None and self.banks[bank.source].source is not None:
                raise ValueError(f"bank {name!r}: draw from a bank that is not itself a draw")
        if self.baseline is not None and self.baseline not in sets:
            raise ValueError(f"baseline {self.baseline!r} is not one of the sets")
        return self


def load_spec(path: str | Path) -> tuple[ExperimentSpec, Path]:
    """The experiment file, checked; and its folder, which relative paths are read from."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PersonagenError(f"cannot read the experiment file {path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise PersonagenError(f"experiment file {path} is not YAML: {exc}") from None
    try:
        spec = ExperimentSpec.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise PersonagenError(
            f"experiment file {path}: {where}: {first['msg']} (see `personagen experiment --help`)"
        ) from None
    return spec, path.resolve().parent


def resolve(folder: Path, value: str) -> str:
    """A path of the experiment file, read from its folder (specs such as `builtin:global` and
    `spi:PATH` keep their kind)."""
    kind, sep, rest = value.partition(":")
    if sep and kind in ("builtin", "big5", "ipip-ffm", "spi"):
        return value if kind == "builtin" else f"{kind}:{folder / rest}"
    if value == BUNDLED or value in ("ipip-50", "ipip-neo-120", "ipip-neo-300"):
        return value
    return str(folder / value)
