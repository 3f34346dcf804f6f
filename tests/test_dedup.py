"""Near-duplicate detection (MinHash LSH) against exact Jaccard similarity, and judge decisions."""

from __future__ import annotations

import random

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from personagen.stages.judge import decide
from personagen.text.dedup import jaccard_estimate, near_duplicates, shingles, signatures

VOCAB = [f"w{i}" for i in range(60)]


def exact_jaccard(a: str, b: str, k: int) -> float:
    sa, sb = set(shingles(a, k)), set(shingles(b, k))
    return len(sa & sb) / len(sa | sb)


def text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(VOCAB) for _ in range(n))


def mutate(rng: random.Random, base: str, changes: int) -> str:
    words = base.split()
    for _ in range(changes):
        words[rng.randrange(len(words))] = rng.choice(VOCAB)
    return " ".join(words)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), changes=st.integers(0, 40))
def test_minhash_estimates_exact_jaccard(seed, changes):
    rng = random.Random(seed)
    a = text(rng, 80)
    b = mutate(rng, a, changes)
    sigs = signatures([a, b], num_perm=256, k=3)
    # standard error of the estimate is sqrt(J(1-J)/256) <= 0.031; allow 4 of them
    assert abs(jaccard_estimate(sigs[0], sigs[1]) - exact_jaccard(a, b, 3)) < 0.13


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_greedy_groups_keep_the_best_and_point_duplicates_at_a_similar_kept_text(seed):
    rng = random.Random(seed)
    bases = [text(rng, 60) for _ in range(4)]
    texts = [mutate(rng, rng.choice(bases), rng.randrange(0, 6)) for _ in range(14)]
    texts += [text(rng, 60) for _ in range(4)]
    ids = [f"p{i:02d}" for i in range(len(texts))]
    priority = [rng.randint(1, 5) for _ in texts]
    sigs = signatures(texts, num_perm=128, k=3)
    dups = near_duplicates(ids, sigs, 0.6, priority)
    index = {pid: i for i, pid in enumerate(ids)}
    kept = [pid for pid in ids if pid not in dups]
    for dup, target in dups.items():
        assert target not in dups, "a duplicate points at a kept text"
        i, j = index[dup], index[target]
        assert jaccard_estimate(sigs[i], sigs[j]) >= 0.6
        assert (priority[j], ids[i]) >= (priority[i], ids[j]) or priority[j] > priority[i]
    for a in kept:  # no two kept texts are near-duplicates (as far as LSH can see)
        for b in kept:
            if a < b:
                assert exact_jaccard(texts[index[a]], texts[index[b]], 3) < 0.9


def test_identical_narratives_are_flagged_and_distinct_ones_are_not():
    rng = random.Random(0)
    boiler = "This person is a kind and friendly individual who enjoys life and values family."
    texts = [boiler, boiler + " They like music.", text(rng, 50), boiler, text(rng, 50)]
    ids = ["a", "b", "c", "d", "e"]
    dups = near_duplicates(ids, signatures(texts, 128, 3), 0.7, [3, 5, 4, 3, 4])
    assert dups == {"a": "b", "d": "b"}


def test_signatures_shape_and_short_texts():
    sigs = signatures(["one", "", "two words"], num_perm=32, k=3)
    assert sigs.shape == (3, 32)
    assert not np.array_equal(sigs[0], sigs[2])
    assert signatures([], 16, 3).shape == (0, 16)


def test_decide_applies_threshold_and_minimums():
    quality = {
        "faithfulness": 2.0,
        "specificity": 4.0,
        "consistency": 5.0,
        "plausibility": 4.0,
        "overall": 3.0,
    }
    assert decide(quality, 3.0, {}) == (True, None)
    assert decide(quality, 3.5, {}) == (False, "overall 3 < threshold 3.5")
    kept, reason = decide(quality, 3.0, {"faithfulness": 3.0})
    assert not kept and reason == "faithfulness 2 < minimum 3"
