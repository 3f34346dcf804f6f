"""Near-duplicate texts by MinHash LSH (datasketch): a user's windows that yielded the same
persona, or generic boilerplate a weak miner writes for everyone.

Plain functions over lists and numpy arrays (no Ray): signatures of word shingles, then a greedy
pass in priority order that keeps the best text of each group and points the others at it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
from datasketch import MinHash, MinHashLSH

_WORD = re.compile(r"\w+")
SCHEME = "affine32"
"""datasketch's hashing scheme; signatures are only comparable under the same scheme and seed."""


def shingles(text: str, k: int) -> list[bytes]:
    """Lower-cased word k-grams (the whole text as one shingle when it has fewer than k words)."""
    words = _WORD.findall(text.lower())
    if len(words) <= k:
        return [" ".join(words).encode("utf-8")]
    return [" ".join(words[i : i + k]).encode("utf-8") for i in range(len(words) - k + 1)]


def signatures(texts: Sequence[str], num_perm: int, k: int, seed: int = 1) -> np.ndarray:
    """MinHash signatures, one row of `num_perm` uint64 per text."""
    if not texts:
        return np.zeros((0, num_perm), dtype=np.uint64)
    hashes = MinHash.bulk(
        (shingles(t, k) for t in texts), num_perm=num_perm, seed=seed, scheme=SCHEME
    )
    return np.vstack([h.hashvalues for h in hashes])


def _minhash(signature: np.ndarray, seed: int) -> MinHash:
    return MinHash(len(signature), seed=seed, hashvalues=signature, scheme=SCHEME)


def jaccard_estimate(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(a == b))


def near_duplicates(
    ids: Sequence[str],
    sigs: np.ndarray,
    threshold: float,
    priority: Sequence[float] | None = None,
    seed: int = 1,
) -> dict[str, str]:
    """{duplicate id: id of the kept text it duplicates}.

    Texts are visited best first (higher `priority`, then smaller id); each one not yet claimed
    is kept and claims every unclaimed text whose estimated Jaccard similarity to it reaches
    `threshold`. So every duplicate points at a kept text it is itself similar to.
    """
    n = len(ids)
    if n < 2:
        return {}
    num_perm = sigs.shape[1]
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    with lsh.insertion_session() as session:
        for i in range(n):
            session.insert(i, _minhash(sigs[i], seed))
    prio = np.zeros(n) if priority is None else np.asarray(priority, dtype=float)
    order = sorted(range(n), key=lambda i: (-prio[i], ids[i]))
    claimed: dict[int, int] = {}
    for i in order:
        if i in claimed:
            continue
        for j in lsh.query(_minhash(sigs[i], seed)):
            if j != i and j not in claimed and jaccard_estimate(sigs[i], sigs[j]) >= threshold:
                if prio[j] > prio[i] or (prio[j] == prio[i] and ids[j] < ids[i]):
                    continue  # j comes first in the order and is (or was) kept on its own
                claimed[j] = i
    return {ids[j]: ids[i] for j, i in claimed.items()}
