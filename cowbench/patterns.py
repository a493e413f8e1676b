"""Page-touch patterns: which pages an op's touches go to, generated inside the engine.

A billion touches must never become a billion-element array, so a pattern is
only a recipe: (kind, count, seed, two parameters), checked here when it is
made. The engine draws its pages a chunk at a time (cowbench/_engine/draws.py,
which also says how each kind draws).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._engine.abi import PAT_HOTSET, PAT_SEQUENTIAL, PAT_UNIFORM, PAT_ZIPF, PATTERN_NAMES
from ._engine.draws import NO_TABLE, pattern_fill, zipf_table
from ._params import ScenarioError

__all__ = ["Pattern", "uniform", "zipf", "sequential", "hotset"]


@dataclass(frozen=True)
class Pattern:
    """Which pages `count` touches go to; see `uniform`, `zipf`, `sequential`, `hotset`.

    `a` and `b` are the kind's parameters (zipf: a = s; hotset: a = hot
    fraction, b = probability of a hot touch; sequential: a = start, b = stride).
    `first` is the index of the first touch in the pattern's infinite sequence:
    touches first .. first+count-1 are the pattern's pages, so a pattern split
    into pieces (see Scenario.concurrently) touches exactly what it did whole.
    """

    kind: int
    count: int
    seed: int = 0
    a: float = 0.0
    b: float = 0.0
    first: int = 0

    def pages(self, npages: int) -> np.ndarray:
        """All pages of this pattern over a region of `npages` pages (small patterns only)."""
        out = np.empty(self.count, dtype=np.int64)
        pattern_fill(self.kind, self.seed, self.a, self.b, npages, self.first, out, self.table(npages), 0,
                     np.empty_like(out))
        return out

    def table(self, npages: int) -> np.ndarray:
        """The read-only uint64 table the kernels draw this pattern with over npages (empty but for zipf)."""
        if self.kind != PAT_ZIPF:
            return NO_TABLE
        return zipf_table(self.a, npages)

    def piece(self, start: int, stop: int) -> "Pattern":
        """Touches start .. stop-1 of this pattern, as a pattern."""
        return Pattern(self.kind, stop - start, self.seed, self.a, self.b, self.first + start)

    def __repr__(self) -> str:
        name = PATTERN_NAMES[self.kind]
        extra = {PAT_ZIPF: f", s={self.a}", PAT_HOTSET: f", hot={self.a}, p_hot={self.b}",
                 PAT_SEQUENTIAL: f", start={int(self.a)}, stride={int(self.b)}"}.get(self.kind, "")
        return f"{name}(count={self.count}{extra}, seed={self.seed})"


def _count(func: str, count) -> int:
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 0:
        raise ScenarioError(f"The 'count' parameter of {func} must be a non-negative integer; got {count!r}")
    return int(count)


def _seed(func: str, seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**63:
        raise ScenarioError(f"The 'seed' parameter of {func} must be an integer in [0, 2**63); got {seed!r}")
    return int(seed)


def uniform(count: int, seed: int = 0) -> Pattern:
    """`count` touches, each to a page drawn uniformly from the region."""
    return Pattern(PAT_UNIFORM, _count("uniform", count), _seed("uniform", seed))


def zipf(count: int, s: float = 1.1, seed: int = 0) -> Pattern:
    """`count` touches with P(page k) proportional to 1/(k+1)**s: page 0 is the hottest.

    Any s > 0, without a table of n probabilities: one alias table draw picks
    one of the ZIPF_HEAD hottest pages or, beyond them, a geometric bucket of
    ranks [lo, hi] (weighted by its mass, by Euler-Maclaurin to ~1e-15). In a
    bucket, a uniform rank k is kept with probability (lo/k)**s, at least
    1/1.02, else another is proposed; so P(k) is exact inside the bucket too.
    The table's thresholds are 32-bit: each slot's split between its two
    outcomes is rounded to 2**-32, so an outcome's probability may be off by
    2**-33 of a slot (1/m of m outcomes) per slot it takes part in, a relative
    error near 1e-9: nothing a run can measure.
    """
    if isinstance(s, bool) or not isinstance(s, (int, float)) or not 0 < s <= 20:
        raise ScenarioError(f"The 's' parameter of zipf must be a number in (0, 20]; got {s!r}")
    return Pattern(PAT_ZIPF, _count("zipf", count), _seed("zipf", seed), float(s))


def sequential(count: int | None = None, start: int = 0, stride: int = 1) -> Pattern:
    """Touches start, start+stride, ... wrapping around the region; count=None means one pass."""
    for name, v in (("start", start), ("stride", stride)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise ScenarioError(f"The {name!r} parameter of sequential must be a non-negative integer; got {v!r}")
    if stride == 0:
        raise ScenarioError("The 'stride' parameter of sequential must be positive; got 0")
    n = -1 if count is None else _count("sequential", count)
    return Pattern(PAT_SEQUENTIAL, n, 0, float(start), float(stride))


def hotset(count: int, hot: float = 0.1, p_hot: float = 0.9, seed: int = 0) -> Pattern:
    """Hot/cold: with probability `p_hot` a touch hits the first `hot` fraction of pages."""
    for name, v in (("hot", hot), ("p_hot", p_hot)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
            raise ScenarioError(f"The {name!r} parameter of hotset must be a number in [0, 1]; got {v!r}")
    return Pattern(PAT_HOTSET, _count("hotset", count), _seed("hotset", seed), float(hot), float(p_hot))
