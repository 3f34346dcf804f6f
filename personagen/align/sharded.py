"""The persona side of the transport, split into blocks and shards, for population-scale Sinkhorn.

Personas are cut into fixed-size *blocks* (`block_rows`, independent of the shard count); a
*shard* is a run of consecutive blocks owned by one `ShardHost` (in this process, or a Ray actor:
see `personagen.runtime.align_shards`). Every per-block result is summed by the driver in block
order, so the plan, the weights and the selection are bit-for-bit the same for any number of
shards.

Kernel truncation (the approximation): a persona is connected to its `knn` nearest atoms, and
each atom to its nearest personas (enough of them to hold `reverse_factor` times its mass, so no
atom is cut off where the pool is sparse). Pairs outside this graph get no transport. When the
atoms are no more than `knn`, every persona is connected to every atom and nothing is truncated.
`truncation_error` measures what the truncation dropped: for a sample of personas it compares
their row of the truncated kernel with the full row under the solved potentials.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

Invoke = Callable[..., list]
"""invoke(method_name, *args) -> one result per shard host, in shard order."""


def block_ranges(n: int, block_rows: int) -> list[tuple[int, int]]:
    return [(start, min(start + block_rows, n)) for start in range(0, n, block_rows)]


def shard_blocks(n: int, block_rows: int, shards: int) -> list[tuple[int, int]]:
    """Persona ranges of `shards` hosts, each a run of whole blocks (no empty shard)."""
    blocks = block_ranges(n, block_rows)
    count = max(1, min(shards, len(blocks)))
    bounds = np.linspace(0, len(blocks), count + 1).round().astype(int)
    return [(blocks[a][0], blocks[b - 1][1]) for a, b in itertools.pairwise(bounds)]


def squared_distances(x: np.ndarray, atoms: np.ndarray, nbr: np.ndarray) -> np.ndarray:
    """C[i, j] = |x_j - atoms[nbr[i, j]]|^2 for a (k, n) neighbour table."""
    cost = np.zeros(nbr.shape)
    for dim in range(x.shape[1]):
        diff = atoms[nbr, dim] - x[None, :, dim]
        cost += diff * diff
    return cost


@dataclass
class Block:
    """One block of personas: its kernel graph, capacities and potentials."""

    x: np.ndarray
    capacity: np.ndarray
    dtype: type = np.float64
    nbr: np.ndarray | None = None
    cost: np.ndarray | None = None
    extra_rows: np.ndarray | None = None
    extra_atoms: np.ndarray | None = None
    extra_cost: np.ndarray | None = None
    g: np.ndarray | None = None
    real: np.ndarray | None = None
    scaled: np.ndarray | None = None
    scaled_eps: float = 0.0

    def connect(self, atoms: np.ndarray, knn: int, tree: cKDTree | None, workers: int) -> None:
        """Forward edges: each persona to its `knn` nearest atoms (all atoms if knn >= K)."""
        n_atoms = atoms.shape[0]
        if tree is None or knn >= n_atoms:
            self.nbr = np.broadcast_to(
                np.arange(n_atoms, dtype=np.int32)[:, None], (n_atoms, self.x.shape[0])
            ).copy()
        else:
            _, idx = tree.query(self.x, k=knn, workers=workers)
            self.nbr = np.ascontiguousarray(np.asarray(idx, dtype=np.int32).reshape(-1, knn).T)
        self.cost = squared_distances(self.x, atoms, self.nbr).astype(self.dtype)
        self.g = np.zeros(self.x.shape[0])
        self.scaled, self.scaled_eps = None, 0.0

    def attach(self, atoms: np.ndarray, rows: np.ndarray, atom_ids: np.ndarray) -> None:
        """Reverse edges (local row, atom) not already among the forward edges."""
        known = (self.nbr[:, rows] == atom_ids[None, :]).any(axis=0)
        self.extra_rows = rows[~known].astype(np.int64)
        self.extra_atoms = atom_ids[~known].astype(np.int64)
        diff = atoms[self.extra_atoms] - self.x[self.extra_rows]
        self.extra_cost = (diff * diff).sum(axis=1)

    def step(self, f: np.ndarray, f_dummy: float | None, eps: float) -> tuple[np.ndarray, float]:
        """Refit g so each persona's column sums to its capacity; per-atom and dummy row sums."""
        n, n_atoms = self.x.shape[0], f.shape[0]
        inv = 1.0 / eps
        if self.scaled_eps != eps:
            self.scaled = self.cost * self.dtype(inv)
            self.scaled_eps = eps
        t = (f * inv).astype(self.dtype)[self.nbr]
        t -= self.scaled
        top = t.max(axis=0).astype(np.float64)
        extra = self.extra_rows is not None and self.extra_rows.size > 0
        if extra:
            te = (f[self.extra_atoms] - self.extra_cost) * inv
            np.maximum.at(top, self.extra_rows, te)
        if f_dummy is not None:
            t0 = f_dummy * inv
            top = np.maximum(top, t0)
        t -= top.astype(self.dtype)
        np.exp(t, out=t)
        total = t.sum(axis=0).astype(np.float64)
        if extra:
            ee = np.exp(te - top[self.extra_rows])
            total += np.bincount(self.extra_rows, weights=ee, minlength=n)
        if f_dummy is not None:
            e0 = np.exp(t0 - top)
            total += e0
        self.g = eps * (np.log(self.capacity) - top - np.log(total))
        scale = self.capacity / total
        t *= scale.astype(self.dtype)
        rows = np.bincount(self.nbr.ravel(), weights=t.ravel(), minlength=n_atoms)
        if extra:
            rows += np.bincount(
                self.extra_atoms, weights=ee * scale[self.extra_rows], minlength=n_atoms
            )
        dummy = 0.0
        if f_dummy is not None:
            dummy_mass = e0 * scale
            dummy = float(dummy_mass.sum())
            self.real = self.capacity - dummy_mass
        else:
            self.real = self.capacity.copy()
        return rows, dummy


class ShardHost:
    """A run of consecutive blocks: what one Ray actor (or this process) holds."""

    def __init__(
        self,
        x: np.ndarray,
        capacity: np.ndarray,
        start: int,
        block_rows: int,
        workers: int = 1,
        dtype: type = np.float64,
    ) -> None:
        self.start = start
        self.workers = workers
        self.blocks = [
            Block(
                np.ascontiguousarray(x[a:b], dtype=np.float64), capacity[a:b].astype(float), dtype
            )
            for a, b in block_ranges(x.shape[0], block_rows)
        ]

    def connect(self, atoms: np.ndarray, knn: int) -> int:
        tree = cKDTree(atoms) if knn < atoms.shape[0] else None
        for block in self.blocks:
            block.connect(atoms, knn, tree, self.workers)
        return sum(b.nbr.size for b in self.blocks)

    def attach(self, atoms: np.ndarray, persona_ids: np.ndarray, atom_ids: np.ndarray) -> int:
        added, offset = 0, self.start
        for block in self.blocks:
            size = block.x.shape[0]
            mine = (persona_ids >= offset) & (persona_ids < offset + size)
            block.attach(atoms, persona_ids[mine] - offset, atom_ids[mine])
            added += block.extra_rows.size
            offset += size
        return added

    def step(self, f: np.ndarray, f_dummy: float | None, eps: float) -> list[tuple]:
        return [block.step(f, f_dummy, eps) for block in self.blocks]

    def received(self) -> np.ndarray:
        return np.concatenate([b.real for b in self.blocks])

    def potentials(self) -> np.ndarray:
        return np.concatenate([b.g for b in self.blocks])


def truncation_error(
    x: np.ndarray,
    real: np.ndarray,
    g: np.ndarray,
    f: np.ndarray,
    atoms: np.ndarray,
    eps: float,
    *,
    sample: int,
    seed: int,
) -> float:
    """Mass the kernel graph dropped, as a fraction of the mass the personas received.

    Under the solved potentials, a persona's full row over all atoms minus its row over the
    graph is what truncation removed; estimated on a random sample of personas.
    """
    rng = np.random.default_rng(seed)
    pick = rng.choice(x.shape[0], size=min(sample, x.shape[0]), replace=False)
    full = np.empty(pick.size)
    sq_atoms = (atoms * atoms).sum(axis=1)
    for start in range(0, pick.size, 256):
        rows = x[pick[start : start + 256]]
        cost = (rows * rows).sum(axis=1)[:, None] + sq_atoms[None, :] - 2.0 * rows @ atoms.T
        logits = (f[None, :] + g[pick[start : start + 256], None] - np.maximum(cost, 0.0)) / eps
        with np.errstate(over="ignore"):  # inf = atoms starved by the truncation: reported
            full[start : start + 256] = np.exp(np.logaddexp.reduce(logits, axis=1))
    kept = real[pick]
    return float(np.maximum(full - kept, 0.0).sum() / max(kept.sum(), 1e-300))


class Shards:
    """`KernelOperator` over shard hosts; `invoke` calls a method on every host, in order."""

    remote = False
    """Whether the hosts live in other processes (Ray actors)."""

    def __init__(self, invoke: Invoke, n_atoms: int, sizes: Sequence[int]) -> None:
        self.invoke = invoke
        self.n_atoms = n_atoms
        self.sizes = list(sizes)

    def row_step(
        self, f: np.ndarray, f_dummy: float | None, eps: float
    ) -> tuple[np.ndarray, float]:
        rows = np.zeros(self.n_atoms)
        dummy = 0.0
        for per_host in self.invoke("step", f, f_dummy, eps):
            for block_rows, block_dummy in per_host:
                rows += block_rows
                dummy += block_dummy
        return rows, dummy

    def received(self) -> np.ndarray:
        return np.concatenate(self.invoke("received"))

    def potentials(self) -> np.ndarray:
        return np.concatenate(self.invoke("potentials"))

    def close(self) -> None:
        """Release the hosts (nothing to do for hosts in this process)."""


ShardFactory = Callable[[np.ndarray, np.ndarray, int, int, type], Shards]
"""factory(x, capacity, block_rows, n_atoms, dtype) -> the persona side of the transport: in
this process (`local_shards`) or on Ray actors (`personagen.runtime.align_shards`)."""


def local_shards(
    x: np.ndarray, capacity: np.ndarray, block_rows: int, n_atoms: int, dtype: type = np.float64
) -> Shards:
    """All blocks in this process (one host, using every core for the kNN queries)."""
    host = ShardHost(x, capacity, 0, block_rows, workers=-1, dtype=dtype)
    return Shards(lambda name, *args: [getattr(host, name)(*args)], n_atoms, [x.shape[0]])


class Graph:
    """The kernel graph: forward kNN on every host, reverse kNN per atom from the driver.

    The reverse edges come from one KD-tree over all personas (K queries, cheap), so they do not
    depend on how the personas are sharded. `grow` doubles the reverse reach of atoms the solver
    cannot serve (where the pool is sparse, neighbouring atoms compete for the same personas and
    the truncated problem can be infeasible): the graph widens only where the exact plan needs it.
    """

    def __init__(
        self,
        shards: Shards,
        x: np.ndarray,
        atoms: np.ndarray,
        atom_mass: np.ndarray,
        *,
        knn: int,
        reverse_factor: float,
        reverse_max: int,
    ) -> None:
        self.shards, self.x, self.atoms = shards, x, atoms
        self.forward = sum(shards.invoke("connect", atoms, knn))
        self.truncated = knn < atoms.shape[0]
        self.reverse = 0
        self.grown = 0
        self.tree: cKDTree | None = None
        if self.truncated:
            want = np.clip(np.ceil(reverse_factor * atom_mass), knn, reverse_max)
            self.want = np.minimum(want.astype(int), x.shape[0])
            self.tree = cKDTree(x)
            self._attach()

    def info(self) -> dict[str, int]:
        return {
            "edges": self.forward + self.reverse,
            "reverse_edges": self.reverse,
            "truncated": int(self.truncated),
            "grown_atoms": self.grown,
        }

    def grow(self, atoms_idx: np.ndarray) -> bool:
        """Double the reverse reach of these atoms; False when none can reach further."""
        if not self.truncated:
            return False
        atoms_idx = atoms_idx[self.want[atoms_idx] < self.x.shape[0]]
        if atoms_idx.size == 0:
            return False
        self.want[atoms_idx] = np.minimum(self.want[atoms_idx] * 2, self.x.shape[0])
        self.grown += int(atoms_idx.size)
        self._attach()
        return True

    def _attach(self) -> None:
        atom_parts, persona_parts = [], []
        # Query atoms in buckets of equal k (powers of two), not all at the largest k.
        bucket = np.maximum(np.ceil(np.log2(self.want)), 0).astype(int)
        for b in np.unique(bucket):
            which = np.flatnonzero(bucket == b)
            k = int(self.want[which].max())
            _, idx = self.tree.query(self.atoms[which], k=k, workers=-1)
            idx = np.asarray(idx).reshape(which.size, k)
            keep = np.arange(k)[None, :] < self.want[which][:, None]
            atom_parts.append(np.broadcast_to(which[:, None], idx.shape)[keep])
            persona_parts.append(idx[keep])
        atom_ids, persona_ids = np.concatenate(atom_parts), np.concatenate(persona_parts)
        order = np.argsort(persona_ids, kind="stable")
        self.reverse = sum(
            self.shards.invoke("attach", self.atoms, persona_ids[order], atom_ids[order])
        )
