"""What one command did: counts that must add up, its outputs, and how to show them.

Every command returns a `Summary`. Its counts are plain integer counters (`<stage>:<field>` for
stages, bare names for the command's own), so Ray tasks can return them and the driver add them
up. `check()` proves the accounting before a command reports success: for every stage, rows in =
out + failed (and rows to do = rows in, where the command counted them), and every equation the
command declares (e.g. files found = read + failed).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from personagen.errors import PersonagenError
from personagen.llm.usage import Usage

Equation = tuple[tuple[str, ...], tuple[str, ...]]
"""(left counters, right counters): the sums must be equal."""


@dataclass
class Summary:
    command: str
    counts: Counter[str]
    stages: list[str] = field(default_factory=list)
    """Stages whose rows in = out + failed (LLM stages also carry usage)."""
    equations: Sequence[Equation] = ()
    rows: Sequence[tuple[str, str]] = ()
    """(label, counter) rows of the console table."""
    outputs: dict[str, Any] = field(default_factory=dict)
    """What the command produced (paths, index info, metrics), for callers and the console."""
    lines: list[str] = field(default_factory=list)
    """Console lines printed after the table."""
    costs: dict[str, float | None] = field(default_factory=dict)
    wall_s: float = 0.0

    def check(self) -> None:
        c = self.counts
        problems = []
        for stage in self.stages:
            if c[f"{stage}:in"] != c[f"{stage}:out"] + c[f"{stage}:failed"]:
                problems.append(
                    f"{stage}: in {c[f'{stage}:in']} != out {c[f'{stage}:out']}"
                    f" + failed {c[f'{stage}:failed']}"
                )
            if f"{stage}:todo" in c and c[f"{stage}:todo"] != c[f"{stage}:in"]:
                problems.append(f"{stage}: {c[f'{stage}:todo']} to do, {c[f'{stage}:in']} done")
        for left, right in self.equations:
            if sum(c[k] for k in left) != sum(c[k] for k in right):
                problems.append(
                    f"{' + '.join(left)} ({sum(c[k] for k in left)}) != "
                    f"{' + '.join(right)} ({sum(c[k] for k in right)})"
                )
        if problems:
            raise PersonagenError(f"{self.command} counts do not add up: " + "; ".join(problems))

    def failed_stage(self) -> tuple[str, Counter[str]] | None:
        """The first stage in which every row that reached it failed (at least one did), with
        its failures by kind of reason (the sink's `<stage>:failed:<kind>` counters)."""
        for stage in self.stages:
            rows = self.counts[f"{stage}:in"]
            if rows and self.counts[f"{stage}:failed"] == rows:
                prefix = f"{stage}:failed:"
                kinds = {
                    k[len(prefix) :]: v for k, v in self.counts.items() if k.startswith(prefix)
                }
                return stage, Counter(kinds)
        return None

    def usage(self, stage: str) -> Usage:
        return Usage.from_counts(self.counts, stage)

    def as_dict(self) -> dict[str, Any]:
        return {
            "command": self.command,
            "stages": self.stages,
            "wall_s": round(self.wall_s, 3),
            "counts": dict(sorted(self.counts.items())),
            "cost_usd": {k: v for k, v in self.costs.items() if v is not None},
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
