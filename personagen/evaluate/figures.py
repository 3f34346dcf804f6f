"""The report's figures as base64 PNG (matplotlib Agg), so an HTML report needs no other file."""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np

from personagen import TRAITS
from personagen.align.weights import kish_ess
from personagen.evaluate.metrics import weighted_corr

_COLOURS = {"reference": "#444444", "before": "#d95f02", "after": "#1b9e77"}


def pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend (no display), imported when a figure is drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png_base64(fig: Any) -> str:
    """A matplotlib figure as a base64 PNG (closed afterwards), for `figures`."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def histograms(
    reference: np.ndarray,
    after: np.ndarray,
    before: np.ndarray | None,
    reference_weights: np.ndarray | None,
) -> str:
    plt = pyplot()
    edges = np.linspace(0.95, 5.05, 42)
    fig, axes = plt.subplots(1, len(TRAITS), figsize=(3.2 * len(TRAITS), 2.8), sharey=True)
    for j, (ax, trait) in enumerate(zip(axes, TRAITS, strict=True)):
        ax.hist(
            reference[:, j],
            bins=edges,
            weights=reference_weights,
            density=True,
            color=_COLOURS["reference"],
            alpha=0.3,
            label=f"reference (n={reference.shape[0]:,})",
        )
        if before is not None:
            ax.hist(
                before[:, j],
                bins=edges,
                density=True,
                histtype="step",
                linestyle="--",
                linewidth=1.4,
                color=_COLOURS["before"],
                label=f"before (n={before.shape[0]:,})",
            )
        ax.hist(
            after[:, j],
            bins=edges,
            density=True,
            histtype="step",
            linewidth=1.6,
            color=_COLOURS["after"],
            label=f"after (n={after.shape[0]:,})",
        )
        ax.set_title(trait)
        ax.set_xlim(edges[0], edges[-1])
    axes[0].set_ylabel("density")
    axes[-1].legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    return png_base64(fig)


def heatmaps(
    reference: np.ndarray,
    after: np.ndarray,
    before: np.ndarray | None,
    reference_weights: np.ndarray | None,
) -> str:
    plt = pyplot()
    panels = [("reference", weighted_corr(reference, reference_weights))]
    if before is not None:
        panels.append(("before", weighted_corr(before, None)))
    panels.append(("after", weighted_corr(after, None)))
    short = [t[:4] for t in TRAITS]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.3))
    axes = np.atleast_1d(axes)
    image = None
    for ax, (name, corr) in zip(axes, panels, strict=True):
        image = ax.imshow(corr, vmin=-1, vmax=1, cmap="RdBu_r")
        for i in range(len(TRAITS)):
            for k in range(len(TRAITS)):
                ax.text(k, i, f"{corr[i, k]:.2f}", ha="center", va="center", fontsize=7)
        ax.set_xticks(range(len(TRAITS)), short, fontsize=8)
        ax.set_yticks(range(len(TRAITS)), short, fontsize=8)
        ax.set_title(f"{name} (Pearson r)")
    fig.colorbar(image, ax=list(axes), shrink=0.8)
    return png_base64(fig)


def weights_figure(weights: np.ndarray) -> str:
    plt = pyplot()
    w = weights / weights.sum() * weights.size
    positive = w[w > 0]
    fig, ax = plt.subplots(figsize=(6, 2.8))
    if positive.size:
        bins = np.logspace(np.log10(positive.min()), np.log10(positive.max()) + 1e-9, 50)
        ax.hist(positive, bins=bins, color=_COLOURS["after"])
        ax.set_xscale("log")
    ax.set_xlabel("weight x n (1 = uniform)")
    ax.set_ylabel("candidates")
    ax.set_title(f"candidate weights (Kish ESS {kish_ess(weights):,.0f} of {weights.size:,})")
    fig.tight_layout()
    return png_base64(fig)


def similarity_figure(retrieved: np.ndarray, kept: np.ndarray) -> str:
    """Histograms of the query similarity of the retrieved personas and of those that went on
    to alignment (revised and scored), as a base64 PNG for the report."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3))
    bins = np.histogram_bin_edges(retrieved, bins=min(30, max(5, retrieved.size // 5)))
    ax.hist(retrieved, bins=bins, color="#9ab", label=f"retrieved (n={retrieved.size:,})")
    ax.hist(kept, bins=bins, color="#c63", alpha=0.7, label=f"aligned candidates (n={kept.size:,})")
    ax.set_xlabel("cosine similarity to the query")
    ax.set_ylabel("personas")
    ax.legend(fontsize=8)
    return png_base64(fig)
