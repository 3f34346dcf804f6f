"""The known-answer persona set: 200 narratives written to designed Big Five levels.

Why: a scorer (a model, an answer mode, an instrument) is only worth its requests if the traits
it reads off a narrative follow the traits the narrative was written with. `personagen
validate-scorer` scores this set and correlates scored with designed levels.

The file (`data/known-answer.jsonl`, one persona a line, ids `ka-001..ka-200`) holds each
persona's `design` ({trait: level 1-5}), trait-neutral `details` (gender, age, occupation,
place, household) and its `narrative`. How it was made:

- **Design.** The orthogonal array OA(25, 5, 5, 2): for a, b in 0..4 the five columns a, b,
  a+b, a+2b, a+3b (mod 5), one per trait in `TRAITS` order; every pair of columns takes each of
  the 25 level pairs once. Eight such blocks, each with its own relabelling of the five levels
  per trait (`random.Random(20261207).sample(range(5), 5)`, five per block, before the block's
  rows), stacked: 200 rows with 40 personas at every level of every trait and an exactly zero
  correlation between any two traits (each block is balanced, so the cross-products vanish).
- **Details**, drawn per row right after its levels with `rng.choice` from fixed lists (2
  genders, 12 age bands, 50 occupations, 10 places, 10 households), independent of the design;
  then the rows were shuffled (`rng.shuffle`) and numbered in that order.
- **Narratives**, one per row, written to its details and levels: third person, 140-180 words,
  life situation, routines and relationships, each trait shown through behaviour in the
  narrative's own words. No IPIP-50 or IPIP-NEO-120 item text, nor any five-word run of one,
  appears in a narrative (`tests/test_validate_scorer.py` checks this, the balance and the
  design against the recipe above).
"""

from __future__ import annotations

import json
from importlib import resources

import numpy as np
import pyarrow as pa

from personagen import TRAITS

KNOWN_ANSWER_FILE = "known-answer.jsonl"
DETAILS = ("gender", "age", "occupation", "place", "household")
"""The trait-neutral details of each persona, as table columns."""


def known_answer_set() -> tuple[pa.Table, np.ndarray]:
    """The set as (personas, design): a table of `persona_id`, `narrative` and the `DETAILS`
    columns in id order, and the (200, 5) integer levels 1-5 in `TRAITS` order, row for row."""
    text = (
        resources.files("personagen.psychometrics")
        .joinpath("data", KNOWN_ANSWER_FILE)
        .read_text(encoding="utf-8")
    )
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    table = pa.table(
        {
            "persona_id": [row["persona_id"] for row in rows],
            "narrative": [row["narrative"] for row in rows],
            **{name: [row["details"][name] for row in rows] for name in DETAILS},
        }
    )
    design = np.array([[row["design"][trait] for trait in TRAITS] for row in rows], dtype=np.int64)
    return table, design
