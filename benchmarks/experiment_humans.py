"""The experiment table on real human data, no LLM: does alignment fix a biased pool?

Real BIG5 respondents stand in for personas. They are split three ways: a reference (held-out
people the sets are compared with), a pool the "persona sets" are drawn from, and a disjoint
sample of real people, the baseline. The pool is biased the way LLM-written personas are (drawn
with probability proportional to exp(beta * z), z the standardised extraversion + agreeableness -
neuroticism), so its random draw shows the bias and aligned draws show what alignment removes.
The two instruments are the halves of IPIP-50 (odd and even items of each trait): sets are
aligned on the odd-item traits and checked on the even-item traits, the held-out instrument, as
the paper checks a set aligned on one inventory on another.

Everything runs through `personagen experiment` on banks written here (personas with no
narrative, scores on both halves), so the table is the one the command prints.

Run:  PYTHONPATH=. python benchmarks/experiment_humans.py [--n 500] [--pool 6000] [--beta 1.0]
          [--baseline biased|real]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from personagen import TRAITS
from personagen.commands.experiment import experiment
from personagen.commands.render import print_comparison
from personagen.config import Config
from personagen.io.bank import GROUPS, KEY, update_manifest, write_group
from personagen.psychometrics.instruments import IPIP_50, instrument_from_dict
from personagen.psychometrics.scoring import trait_scores

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ipip" / "big5-2012" / "data.csv"


def half_instrument(parity: int) -> dict:
    """IPIP-50's odd (parity 1) or even (0) items of each trait, as an instrument file."""
    items = [i for i in IPIP_50.items if int(i.id[1:]) % 2 == parity]
    name = "odd" if parity else "even"
    return {
        "id": f"ipip-50-{name}",
        "name": f"IPIP-50, {name} items (5 per trait)",
        "scale": {"min": 1, "max": 5, "labels": list(IPIP_50.scale.labels)},
        "items": [
            {"id": i.id, "text": i.text, "trait": i.trait, "keyed": "+" if i.keyed > 0 else "-"}
            for i in items
        ],
    }


def people() -> pd.DataFrame:
    """BIG5 respondents with all 50 items answered on 1-5."""
    frame = pd.read_csv(DATA, sep="\t")
    items = [i.id for i in IPIP_50.items]
    answered = frame[items].isin([1, 2, 3, 4, 5]).all(axis=1)
    return frame.loc[answered, items].reset_index(drop=True)


def half_traits(frame: pd.DataFrame, spec: dict) -> np.ndarray:
    instrument = instrument_from_dict(spec)
    responses = frame[[i.id for i in instrument.items]].to_numpy(dtype=np.float64)
    return trait_scores(responses, instrument, 5)


def write_bank(path: Path, ids: list[str], traits: dict[str, np.ndarray]) -> None:
    """A bank of real people: no narrative, scores on both halves."""
    n = len(ids)
    personas = {KEY: ids, "narrative": [""] * n}
    write_group(path, "personas", _full("personas", personas, n))
    for instrument, x in traits.items():
        columns = {KEY: ids, "instrument": [instrument] * n}
        columns.update({t: x[:, j] for j, t in enumerate(TRAITS)})
        write_group(path, "scores", _full("scores", columns, n))
    update_manifest(path, origin="imported")


def _full(group: str, columns: dict, n: int) -> pa.Table:
    schema = GROUPS[group]
    return pa.table({f.name: columns.get(f.name, pa.nulls(n, f.type)) for f in schema}, schema)


def write_traits(path: Path, x: np.ndarray) -> str:
    pq.write_table(pa.table({t: x[:, j] for j, t in enumerate(TRAITS)}), path)
    return str(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--pool", type=int, default=6000)
    parser.add_argument("--reference", type=int, default=8000)
    parser.add_argument("--beta", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--baseline",
        choices=["biased", "real"],
        default="biased",
        help="the set reductions are against: the biased pool's random draw (the LLM-written "
        "set's place) or the disjoint sample of real people",
    )
    parser.add_argument("--keep", type=Path, default=None, help="write the run here (else tmp)")
    args = parser.parse_args()
    if not DATA.exists():
        raise SystemExit(f"needs the shared BIG5 data at {DATA}")
    started = time.perf_counter()
    frame = people()
    specs = {"odd": half_instrument(1), "even": half_instrument(0)}
    halves = {k: half_traits(frame, spec) for k, spec in specs.items()}
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(frame))
    ref_rows = order[: args.reference]
    baseline_rows = order[args.reference : args.reference + args.n]
    rest = order[args.reference + args.n :]
    full = halves["odd"] + halves["even"]  # the bias acts on the whole-inventory traits
    z = (full - full.mean(axis=0)) / full.std(axis=0)
    score = z[rest, TRAITS.index("extraversion")] + z[rest, TRAITS.index("agreeableness")]
    score -= z[rest, TRAITS.index("neuroticism")]
    p = np.exp(args.beta * score / score.std())
    pool_rows = rng.choice(rest, args.pool, replace=False, p=p / p.sum())
    print(
        f"BIG5 respondents {len(frame):,} (all 50 items answered); reference {len(ref_rows):,}, "
        f"biased pool {len(pool_rows):,} (beta {args.beta}), real baseline {len(baseline_rows):,};"
        f" n {args.n}; load {os.getloadavg()[0]:.2f}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        paths = {}
        for key, spec in specs.items():
            paths[key] = root / f"ipip-50-{key}.yaml"
            paths[key].write_text(yaml.safe_dump(spec))
        for name, rows in (("pool", pool_rows), ("real", baseline_rows)):
            ids = [f"r{r}" for r in rows]
            traits = {spec["id"]: halves[k][rows] for k, spec in specs.items()}
            write_bank(root / "banks" / name, ids, traits)
        experiment_file = {
            "n": args.n,
            "instrument": str(paths["odd"]),
            "held_out": {
                "instrument": str(paths["even"]),
                "reference": write_traits(root / "ref-even.parquet", halves["even"][ref_rows]),
            },
            "references": [
                {
                    "name": "held-out people",
                    "reference": write_traits(root / "ref-odd.parquet", halves["odd"][ref_rows]),
                }
            ],
            "banks": {"pool": {"path": "banks/pool"}, "real": {"path": "banks/real"}},
            "sets": [
                {"name": "real people", "bank": "real"},
                {"name": "biased pool, random", "bank": "pool", "select": "random"},
                {"name": "aligned is", "bank": "pool", "select": "align", "method": "is"},
                {"name": "aligned ot", "bank": "pool", "select": "align", "method": "ot"},
                {"name": "aligned is+ot", "bank": "pool", "select": "align", "method": "is+ot"},
            ],
            "baseline": "biased pool, random" if args.baseline == "biased" else "real people",
            "settings": {
                "seed": args.seed,
                "align.exclude_flagged": False,
                "score.min_items_per_trait": 5,
            },
        }
        spec_path = root / "experiment.yaml"
        spec_path.write_text(yaml.safe_dump(experiment_file, sort_keys=False))
        summary = experiment(Config(), spec_path, root / "out")
        document = summary.outputs["report"]
        print_comparison(document)
        table = document["references"]["held-out people"]
        header = (
            "set", "n", "energy x floor", "W1 x floor", "held-out energy x floor",
            "held-out W1 x floor", "energy reduction %", "held-out reduction %", "coverage",
            "(real)",
        )  # fmt: skip
        print("| " + " | ".join(header) + " |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for name, row in table["sets"].items():
            ind, held, div = row["in_distribution"], row["held_out"], row["diversity"]
            print(
                f"| {name} | {row['n']} | {ind['x_floor']['energy']:.2f} | "
                f"{ind['x_floor']['w1_mean']:.2f} | {held['x_floor']['energy']:.2f} | "
                f"{held['x_floor']['w1_mean']:.2f} | {ind['reduction_pct']['energy']:+.1f} | "
                f"{held['reduction_pct']['energy']:+.1f} | {div['coverage']:.3f} | "
                f"{div['coverage_real']:.3f} |"
            )
        floor = table["sets"]["real people"]["in_distribution"]["floor"]["mean"]["energy"]
        print(f"energy floor (n {args.n}): {floor:.4f}; wall {time.perf_counter() - started:.0f} s")
        if args.keep:
            (root / "table.json").write_text(json.dumps(table, indent=1, default=str))


if __name__ == "__main__":
    main()
