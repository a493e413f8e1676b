"""Plots from tidy result tables. Never imports the engine: plots read DataFrames.

One style for every figure: labelled axes with units, a legend, one idea per
figure, policies always in the same colours.
"""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from .fileio import atomic_write  # noqa: E402

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


# --- experiment figures -------------------------------------------------------------------------
#
# Every experiment figure goes through `lines`: one panel, one idea, labelled axes
# with units, a legend, log scales where sizes span decades (sizes on a base-2 axis
# labelled "64 MiB", "1 GiB", ...), and published numbers drawn in black/grey with
# `Ref` so that the reproduction and the reference sit in the same picture.

LINESTYLES = ("-", "--", ":", "-.", (0, (5, 1, 1, 1)), (0, (1, 3)))
SEQUENTIAL_CMAP = "viridis"          # ordered (numeric) series
CATEGORICAL = ("#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#bcbd22")   # other named series
FIGSIZE = (6.4, 4.2)


class Ref:
    """A published number, drawn in black/grey on an experiment figure.

    Ref.hline(y, label)             a horizontal line (e.g. a published size)
    Ref.vline(x, label)             a vertical line (e.g. a published threshold)
    Ref.curve(xs, ys, label)        a reference curve (e.g. a published ms/GB slope)
    Ref.band(xs, lo, hi, label)     a shaded range (e.g. 9-13 ms/GB)
    Ref.point(x, y, label)          a published data point (a star)
    """

    def __init__(self, kind: str, label: str, **kw):
        self.kind, self.label, self.kw = kind, label, kw

    @classmethod
    def hline(cls, y, label, color="0.2", ls="--"):
        return cls("hline", label, y=y, color=color, ls=ls)

    @classmethod
    def vline(cls, x, label, color="0.2", ls="--"):
        return cls("vline", label, x=x, color=color, ls=ls)

    @classmethod
    def curve(cls, xs, ys, label, color="0.2", ls="--", lw=1.1, alpha=1.0):
        return cls("curve", label, xs=list(xs), ys=list(ys), color=color, ls=ls, lw=lw, alpha=alpha)

    @classmethod
    def under(cls, xs, ys, label):
        """A reference curve drawn wide and pale under the data, for data that should lie on it."""
        return cls.curve(xs, ys, label, color="0.55", ls="-", lw=6, alpha=0.35)

    @classmethod
    def band(cls, xs, lo, hi, label, color="0.55"):
        return cls("band", label, xs=list(xs), lo=list(lo), hi=list(hi), color=color)

    @classmethod
    def point(cls, x, y, label, color="black"):
        return cls("point", label, x=x, y=y, color=color)

    def draw(self, ax) -> None:
        k = self.kw
        if self.kind == "hline":
            ax.axhline(k["y"], color=k["color"], ls=k["ls"], lw=1.1, label=self.label, zorder=1)
        elif self.kind == "vline":
            ax.axvline(k["x"], color=k["color"], ls=k["ls"], lw=1.1, label=self.label, zorder=1)
        elif self.kind == "curve":
            ax.plot(k["xs"], k["ys"], color=k["color"], ls=k["ls"], lw=k["lw"], alpha=k["alpha"],
                    label=self.label, zorder=1)
        elif self.kind == "band":
            ax.fill_between(k["xs"], k["lo"], k["hi"], color=k["color"], alpha=0.25, lw=0,
                            label=self.label, zorder=0)
        elif self.kind == "point":
            ax.plot([k["x"]], [k["y"]], marker="*", ms=13, ls="none", color=k["color"],
                    label=self.label, zorder=5)


def _size_label(mib: float) -> str:
    if mib >= 1024 * 1024:
        return f"{mib / 2**20:g} TiB"
    if mib >= 1024:
        return f"{mib / 1024:g} GiB"
    if mib >= 1:
        return f"{mib:g} MiB"
    return f"{mib * 1024:g} KiB"


def _num(v, _=None) -> str:
    """Plain tick labels on log axes: 0.5, 1, 64, 1,000 (not 10^3)."""
    if v >= 1000 and float(v).is_integer():
        return f"{v:,.0f}"
    return f"{v:g}"


def log_axis(ax, axis: str = "x", base: int = 10) -> None:
    """A log axis with plain tick labels; base 2 for counts that double (workers, apps)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    (ax.set_xscale if axis == "x" else ax.set_yscale)("log", base=base)
    a = ax.xaxis if axis == "x" else ax.yaxis
    if base == 10:
        lo, hi = ax.get_xlim() if axis == "x" else ax.get_ylim()
        decades = math.log10(hi / lo) if lo > 0 and hi > lo else 0
        a.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0) if decades <= 3 else (1.0,)))
    else:
        a.set_major_locator(LogLocator(base=base))
    a.set_major_formatter(FuncFormatter(_num))
    a.set_minor_formatter(NullFormatter())


def size_axis(ax, axis: str = "x") -> None:
    """A base-2 log axis of sizes given in MiB, ticks labelled 64 MiB, 1 GiB, ..."""
    from matplotlib.ticker import FuncFormatter, LogLocator

    a = ax.xaxis if axis == "x" else ax.yaxis
    (ax.set_xscale if axis == "x" else ax.set_yscale)("log", base=2)
    a.set_major_locator(LogLocator(base=4))
    a.set_major_formatter(FuncFormatter(lambda v, _: _size_label(v)))
    a.set_minor_locator(LogLocator(base=2))
    a.set_minor_formatter(FuncFormatter(lambda v, _: ""))


def _hue_styles(values, hue_fmt, palette=None) -> dict:
    """Colour, marker and label per hue value: a policy name gets its POLICY_STYLE
    (label from hue_fmt if given), `palette` overrides colours, and other values
    get a sequential colour map (numbers) or a categorical palette (names)."""
    values = list(values)
    palette = palette or {}
    cmap = plt.get_cmap(SEQUENTIAL_CMAP)
    markers = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h")
    others = [v for v in values if v not in POLICY_STYLE or v in palette]
    n = max(len(others) - 1, 1)
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in others)
    out = {}
    for v in values:
        if v in POLICY_STYLE and v not in palette:
            st = dict(POLICY_STYLE[v])
            if hue_fmt:
                st["label"] = hue_fmt(v)
            out[v] = st
            continue
        i = others.index(v)
        color = palette.get(v) or (cmap(0.05 + 0.75 * i / n) if numeric else CATEGORICAL[i % len(CATEGORICAL)])
        out[v] = dict(color=color, marker=markers[i % len(markers)], label=hue_fmt(v) if hue_fmt else str(v))
    return out


def lines(df: pd.DataFrame, x: str, y: str, path, *, title: str, xlabel: str, ylabel: str,
          hue: str | None = None, style: str | None = None, hue_fmt=None, style_fmt=None,
          hue_order=None, style_order=None, palette: dict | None = None,
          logx: bool | int = False, logy: bool | int = False, size_x: bool = False, size_y: bool = False,
          symlogy: float | None = None, refs=(), ylim=None, xlim=None, legend_loc="best",
          legend_out: bool = False, yticks: dict | None = None, drawstyle: str = "default",
          markers: bool = True, note: str | None = None) -> Path:
    """One figure: y against x, a line per (hue, style) group, published numbers as refs.

    hue: column whose values get a colour (policy names get their POLICY_STYLE);
    style: column whose values get a line style (solid, dashed, dotted, ...).
    logx/logy: True for a base-10 log axis, 2 for base 2 (plain tick labels either way).
    size_x/size_y: the axis holds sizes in MiB (base-2 log scale, labelled in MiB/GiB).
    symlogy: a log y axis that still shows 0 (linear below this threshold).
    yticks: {value: label} for an axis of a few named values (e.g. {0: "failed", 1: "succeeded"}).
    legend_out: put the legend to the right of the axes (many series).
    note: a line of small text under the axes (assumptions, scaled-down sizes).
    """
    fig, ax = plt.subplots(figsize=FIGSIZE)
    hues = list(hue_order) if hue_order is not None else (list(dict.fromkeys(df[hue])) if hue else [None])
    styles = list(style_order) if style_order is not None else (list(dict.fromkeys(df[style])) if style else [None])
    hstyle = _hue_styles(hues, hue_fmt, palette) if hue else {None: dict(color="#1f77b4", marker="o", label=None)}
    many = hue is not None and style is not None
    for h in hues:
        for s_i, s in enumerate(styles):
            g = df
            if hue is not None:
                g = g[g[hue] == h]
            if style is not None:
                g = g[g[style] == s]
            if g.empty:
                continue
            g = g.sort_values(x)
            st = dict(hstyle[h])
            label = st.pop("label", None)
            if style is not None:
                st["ls"] = LINESTYLES[s_i % len(LINESTYLES)]
                slabel = style_fmt(s) if style_fmt else str(s)
                label = f"{label}, {slabel}" if many and label else (label or slabel)
            if not markers:
                st.pop("marker", None)
            ax.plot(g[x], g[y], label=label, ms=5, lw=1.6, drawstyle=drawstyle, **st)
    for r in refs:
        r.draw(ax)
    if size_x:
        size_axis(ax, "x")
    elif logx:
        log_axis(ax, "x", 10 if logx is True else int(logx))
    if size_y:
        size_axis(ax, "y")
    elif logy:
        log_axis(ax, "y", 10 if logy is True else int(logy))
    elif symlogy is not None:
        from matplotlib.ticker import FuncFormatter
        ax.set_yscale("symlog", linthresh=symlogy)
        ax.yaxis.set_major_formatter(FuncFormatter(_num))
        if ylim is None:
            top = max([float(pd.to_numeric(df[y]).max())] + [max(r.kw.get("ys", [0]) + [r.kw.get("y", 0)])
                                                               for r in refs])
            ax.set_ylim(0, max(top, symlogy) * 2.5)
    if ylim is not None:
        ax.set_ylim(*ylim)
    if yticks:
        ax.set_yticks(list(yticks), [str(v) for v in yticks.values()])
    if xlim is not None:
        ax.set_xlim(*xlim)
    _style(ax, title, xlabel, ylabel)
    if legend_out:
        ax.legend(frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    else:
        ax.legend(frameon=False, fontsize=8, loc=legend_loc)
    if note:
        fig.text(0.01, -0.01, note, fontsize=7, color="0.35", ha="left", va="top", wrap=True)
    return save_figure(fig, path)


def bars(df: pd.DataFrame, x: str, y: str, path, *, title: str, xlabel: str, ylabel: str,
         hue: str | None = None, logy: bool = False, note: str | None = None, fmt: str = "{:,.1f}") -> Path:
    """One figure: a bar per row (grouped by `hue` when given), each labelled with its value.
    Policy names on x or hue get their POLICY_STYLE colours."""
    import numpy as np

    fig, ax = plt.subplots(figsize=FIGSIZE)
    cats = list(dict.fromkeys(df[x]))
    hues = list(dict.fromkeys(df[hue])) if hue else [None]
    width = 0.8 / len(hues)
    for j, h in enumerate(hues):
        g = df if h is None else df[df[hue] == h]
        vals = [float(g[g[x] == c][y].sum()) if (g[x] == c).any() else 0.0 for c in cats]
        pos = np.arange(len(cats)) + (j - (len(hues) - 1) / 2) * width
        key = h if h is not None else None
        colors = [POLICY_STYLE.get(c, {}).get("color", CATEGORICAL[i % len(CATEGORICAL)]) for i, c in enumerate(cats)] \
            if key is None else POLICY_STYLE.get(key, {}).get("color", CATEGORICAL[j % len(CATEGORICAL)])
        rects = ax.bar(pos, vals, width=width * 0.95, color=colors,
                       label=None if key is None else POLICY_STYLE.get(key, {}).get("label", str(key)))
        for r, v in zip(rects, vals):
            ax.annotate(fmt.format(v), (r.get_x() + r.get_width() / 2, r.get_height()), ha="center", va="bottom",
                        fontsize=7, xytext=(0, 2), textcoords="offset points")
    ax.set_xticks(np.arange(len(cats)), [str(c) for c in cats], fontsize=8)
    if logy:
        log_axis(ax, "y")
    ax.set_title(title, fontsize=11)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, axis="y", alpha=0.3)
    if hue:
        ax.legend(frameon=False, fontsize=8)
    if note:
        fig.text(0.01, -0.01, note, fontsize=7, color="0.35", ha="left", va="top", wrap=True)
    return save_figure(fig, path)
