"""The options of the alignment algorithms (density ratios, importance weights, transport)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from personagen.options import Options

AlignMethod = Literal["auto", "is", "ot", "ot-unbalanced", "is+ot"]
"""Resampling methods of `align` (see `personagen.align.api`)."""


class AlignOptions(Options):
    """Parameters of `align` (see `personagen.align.api`); the defaults are what
    benchmarks/align_quality.py and benchmarks/align_scale.py were measured with."""

    density: Literal["kde", "classifier"] = Field(
        "kde", description="density ratio of `is`: Gaussian KDE (Scott) or a classifier"
    )
    smoothing: Literal["psis", "truncate"] = Field(
        "psis", description="importance weights: Pareto-smoothed or truncated"
    )
    epsilon: float = Field(
        0.01, gt=0, description="final entropic regularisation, squared trait units"
    )
    epsilon_start: float = Field(1.0, gt=0, description="first epsilon of epsilon-scaling")
    epsilon_decay: float = Field(0.5, gt=0, lt=1, description="epsilon factor per stage")
    tol: float = Field(1e-3, gt=0, description="stop when the marginal L1 error is below this")
    stage_tol: float = Field(3e-2, gt=0, description="marginal error ending earlier stages")
    max_iter: int = Field(3000, ge=1, description="Sinkhorn iterations, all stages together")
    reg_m: float = Field(
        16.0,
        gt=0,
        description="KL relaxation of the reference marginal (ot-unbalanced; auto when the "
        "balanced solver stalls), squared trait units: an atom whose transport costs d more "
        "per unit than the typical atom's keeps about exp(-d / reg_m) of its mass (16: no "
        "worse than the exact assignment in benchmarks/align_quality.py; smaller leaves more "
        "uncovered and follows the pool more)",
    )
    stall_iter: int = Field(
        200,
        ge=1,
        description="auto: relax the reference marginal when the last epsilon stage is "
        "predicted to need more iterations than this",
    )
    overrelax: float = Field(
        1.7, ge=1, lt=2, description="over-relaxation of the last stage's updates (1 = plain)"
    )
    knn: int = Field(32, ge=1, description="atoms per persona in the truncated kernel")
    float32: bool = Field(
        True, description="kernel values in float32 (potentials and sums stay float64)"
    )
    reverse_factor: float = Field(
        4.0, gt=0, description="personas per unit of atom mass linked to each atom"
    )
    reverse_max: int = Field(256, ge=1, description="cap on personas linked to one atom")
    atoms: int = Field(
        16384, ge=16, description="reference atoms kept after de-duplication (k-means above)"
    )
    block_rows: int = Field(65536, ge=256, description="personas per block (unit of sharding)")
    preselect: float = Field(3.0, ge=1, description="is+ot: IS keeps preselect * n candidates")
    truncation_sample: int = Field(
        2000, ge=0, description="personas sampled to measure the kernel truncation error"
    )
