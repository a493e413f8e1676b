"""Page-touch patterns: which pages an op's touches go to, generated inside the engine.

A billion touches must never become a billion-element array, so a pattern is
only a recipe: (kind, count, seed, two parameters), checked here when it is
made. The engine draws its pages a chunk at a time (cowbench/_engine/draws.py,
which also says how each kind draws).
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np

from ._engine.abi import PAT_HOTSET, PAT_SEQUENTIAL, PAT_UNIFORM, PAT_ZIPF, PATTERN_NAMES
from ._engine.draws import NO_TABLE, pattern_fill, zipf_table
from ._params import ScenarioError, safe_repr

__all__ = ["Pattern", "uniform", "zipf", "sequential", "hotset", "MAX_TOUCHES"]

#: Touches one pattern may make: 2**53 (exact as a float; 1.4 years at 200 M touches/s).
MAX_TOUCHES = 2**53
ZIPF_MAX_S = 20


@dataclass(frozen=True)
class Pattern:
    """Which pages `count` touches go to; see `uniform`, `zipf`, `sequential`, `hotset`.

    `a` and `b` are the kind's parameters (zipf: a = s; hotset: a = hot
    fraction, b = probability of a hot touch; sequential: a = start, b = stride).
    `first` is the index of the first touch in the pattern's infinite sequence:
    touches first .. first+count-1 are the pattern's pages, so a pattern split
    into pieces (see Scenario.concurrently) touches exactly what it did whole.

    Everything is checked here, when the pattern is made (a hand-built one too):
    kind one of the four, count in [0, 2**53] (-1, "one pass", for sequential
    only), seed in [0, 2**63), first in [0, 2**62], and the parameters the kind takes
    (zipf: 0 < s <= 20; hotset: fractions in [0, 1]; sequential: integers, start
    >= 0, stride >= 1, kept exact; parameters a kind does not take must be 0).
    """

    kind: int
    count: int
    seed: int = 0
    a: float = 0.0
    b: float = 0.0
    first: int = 0

    def __post_init__(self):
        kind = _integer("Pattern", "kind", self.kind, 0, max(PATTERN_NAMES))
        if kind not in PATTERN_NAMES:
            raise ScenarioError(f"The 'kind' parameter of Pattern must be one of "
                                f"{', '.join(f'{k} ({n})' for k, n in PATTERN_NAMES.items())}; got {kind!r}")
        low = -1 if kind == PAT_SEQUENTIAL else 0
        count = _integer("Pattern", "count", self.count, low, MAX_TOUCHES)
        seed = _integer("Pattern", "seed", self.seed, 0, 2**63 - 1)
        first = _integer("Pattern", "first", self.first, 0, 2**62)    # a piece of a long pattern starts late
        if kind == PAT_SEQUENTIAL:
            a = _integer("Pattern", "a (sequential start)", self.a, 0, None)
            b = _integer("Pattern", "b (sequential stride)", self.b, 1, None)
        elif kind == PAT_ZIPF:
            a, b = _real("Pattern", "a (zipf s)", self.a, 0, ZIPF_MAX_S, open_low=True), _unused(self.b, "b", kind)
        elif kind == PAT_HOTSET:
            a, b = _real("Pattern", "a (hot fraction)", self.a, 0, 1), _real("Pattern", "b (p_hot)", self.b, 0, 1)
        else:
            a, b = _unused(self.a, "a", kind), _unused(self.b, "b", kind)
        for name, v in (("kind", kind), ("count", count), ("seed", seed), ("a", a), ("b", b), ("first", first)):
            object.__setattr__(self, name, v)

    def engine_params(self, npages: int) -> tuple[float, float]:
        """(a, b) as the kernels take them over a region of npages pages: a sequential
        pattern's start and stride reduced modulo the region, so they stay exact as
        floats and start + i * stride cannot overflow."""
        if self.kind == PAT_SEQUENTIAL:
            return float(self.a % npages), float(self.b % npages)
        return float(self.a), float(self.b)

    def pages(self, npages: int) -> np.ndarray:
        """All pages of this pattern over a region of `npages` pages (small patterns only)."""
        out = np.empty(self.count, dtype=np.int64)
        pattern_fill(self.kind, self.seed, *self.engine_params(npages), npages, self.first, out,
                     self.table(npages), 0, np.empty_like(out))
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
                 PAT_SEQUENTIAL: f", start={self.a}, stride={self.b}"}.get(self.kind, "")
        return f"{name}(count={self.count}{extra}, seed={self.seed})"


def _integer(func: str, param: str, v, low: int, high: int | None) -> int:
    """An exact integer in [low, high]; an integer-valued float only below 2**53 (exact)."""
    if isinstance(v, (float, np.floating)) and math.isfinite(v) and v == int(v) and abs(v) <= 2**53:
        v = int(v)
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral) \
            or v < low or (high is not None and v > high):
        bound = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise ScenarioError(f"The {param!r} parameter of {func} must be an integer {bound}; got {safe_repr(v)}")
    return int(v)


def _real(func: str, param: str, v, low: float, high: float, open_low: bool = False) -> float:
    ok = isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_)) and math.isfinite(v) \
        and (low < v if open_low else low <= v) and v <= high
    if not ok:
        bound = f"({low}, {high}]" if open_low else f"[{low}, {high}]"
        raise ScenarioError(f"The {param!r} parameter of {func} must be a number in {bound}; got {safe_repr(v)}")
    return float(v)


def _unused(v, param: str, kind: int) -> float:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real) or v != 0:
        raise ScenarioError(f"The {param!r} parameter of Pattern is unused by {PATTERN_NAMES[kind]} patterns "
                            f"and must be 0; got {safe_repr(v)}")
    return 0.0


def _count(func: str, count) -> int:
    return _integer(func, "count", count, 0, MAX_TOUCHES)


def _seed(func: str, seed) -> int:
    return _integer(func, "seed", seed, 0, 2**63 - 1)


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
    s = _real("zipf", "s", s, 0, ZIPF_MAX_S, open_low=True)
    return Pattern(PAT_ZIPF, _count("zipf", count), _seed("zipf", seed), s)


def sequential(count: int | None = None, start: int = 0, stride: int = 1) -> Pattern:
    """Touches start, start+stride, ... wrapping around the region; count=None means one pass.
    start and stride are exact integers of any size (a stride is taken modulo the region)."""
    for name, v, low in (("start", start, 0), ("stride", stride, 1)):
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral) or v < low:
            raise ScenarioError(f"The {name!r} parameter of sequential must be an integer >= {low}; "
                                f"got {safe_repr(v)}")
    n = -1 if count is None else _count("sequential", count)
    return Pattern(PAT_SEQUENTIAL, n, 0, int(start), int(stride))


def hotset(count: int, hot: float = 0.1, p_hot: float = 0.9, seed: int = 0) -> Pattern:
    """Hot/cold: with probability `p_hot` a touch hits the first `hot` fraction of pages."""
    hot, p_hot = _real("hotset", "hot", hot, 0, 1), _real("hotset", "p_hot", p_hot, 0, 1)
    return Pattern(PAT_HOTSET, _count("hotset", count), _seed("hotset", seed), hot, p_hot)
