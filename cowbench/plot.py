"""Plots from tidy result tables. Never imports the engine: plots read DataFrames.

One style for every figure: labelled axes with units, a legend, one idea per
figure, policies always in the same colours.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from .results import atomic_write  # noqa: E402

POLICY_STYLE = {
    "eager": dict(color="#d62728", marker="s", label="eager copy (traditional fork)"),
    "cow": dict(color="#1f77b4", marker="o", label="copy-on-write (Linux fork)"),
    "odf": dict(color="#2ca02c", marker="^", label="on-demand-fork"),
    "vfork": dict(color="#7f7f7f", marker="v", label="vfork"),
}


def _style(ax, title: str, xlabel: str, ylabel: str) -> None:
    ax.set_title(title, fontsize=11)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend(frameon=False, fontsize=8)


def save_figure(fig, path) -> Path:
    """Write fig as PNG atomically and close it."""
    out = atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=130, bbox_inches="tight"))
    plt.close(fig)
    return out


def write_fraction(df: pd.DataFrame, path) -> Path:
    """Pages copied and peak memory against the fraction of its heap a forked child writes.

    Expects one row per (policy, written_pct) with columns pages_copied and peak_mib.
    """
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for policy, g in df.groupby("policy", sort=False):
        g = g.sort_values("written_pct")
        st = POLICY_STYLE.get(policy, {})
        left.plot(g.written_pct, g.pages_copied, **st)
        right.plot(g.written_pct, g.peak_mib, **st)
    heap = df.heap_mib.iloc[0]
    _style(left, f"Pages copied because of the fork ({heap:g} MiB heap)",
           "pages of the heap the child writes (%)", "pages copied (fork + COW faults)")
    _style(right, "Peak physical memory of parent + child",
           "pages of the heap the child writes (%)", "peak memory (MiB)")
    return save_figure(fig, path)
