"""Global alignment: resample a persona set so its trait distribution matches a human reference.

Plain functions over numpy (no Ray import here): density ratios and importance weights
(`density`, `weights`), entropic optimal transport in the log domain (`sinkhorn`) over persona
blocks that may live on Ray workers (`sharded`, `ray_shards`), the choice of distinct personas
(`select`), and one entry point, `api.align`.
"""

from personagen.align.api import METHODS, AlignResult, align

__all__ = ["METHODS", "AlignResult", "align"]
