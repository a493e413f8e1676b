"""Page-touch patterns generated inside the engine.

A billion touches must never become a billion-element array, so a pattern is
only a recipe: (kind, count, seed, two parameters). The engine asks
`_pattern_fill` for the pages of touches [i0, i0 + len(out)) into a small
buffer. Every draw comes from a counter-based generator (splitmix64 of seed and
touch index), so page i is the same whichever chunk computes it: results do not
depend on chunk size, and the same seed gives the same pages on every machine.
zipf draws its ZIPF_HEAD hottest pages from an alias table (one random number
and two table reads a touch) and only the rest by rejection-inversion.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numba import njit

from ._params import ScenarioError

__all__ = ["Pattern", "uniform", "zipf", "sequential", "hotset"]

ZIPF_HEAD = 1 << 16     # ranks a zipf alias table covers; the tail beyond is one more outcome

# Pattern kinds as the kernels see them.
PAT_SEQUENTIAL, PAT_UNIFORM, PAT_ZIPF, PAT_HOTSET = 0, 1, 2, 3
_KIND_NAMES = {PAT_SEQUENTIAL: "sequential", PAT_UNIFORM: "uniform", PAT_ZIPF: "zipf", PAT_HOTSET: "hotset"}


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
        prob, alias = self.table(npages)
        _pattern_fill(self.kind, self.seed, self.a, self.b, npages, self.first, out, prob, alias, 0)
        return out

    def table(self, npages: int) -> tuple[np.ndarray, np.ndarray]:
        """The (prob, alias) table the kernels draw this pattern with over npages (empty but for zipf)."""
        if self.kind != PAT_ZIPF:
            return np.zeros(0, dtype=np.float64), np.zeros(0, dtype=np.int32)
        return zipf_table(self.a, npages)

    def piece(self, start: int, stop: int) -> "Pattern":
        """Touches start .. stop-1 of this pattern, as a pattern."""
        return Pattern(self.kind, stop - start, self.seed, self.a, self.b, self.first + start)

    def __repr__(self) -> str:
        name = _KIND_NAMES[self.kind]
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

    Bounded to the region by rejection-inversion (Hoermann and Derflinger 1996),
    so any s > 0 works and no table of n probabilities is ever built.
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


# --- jitted generators: private, array-only, never validate -------------------

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


@njit(cache=True, inline="always")
def _splitmix64(x):
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


@njit(cache=True, inline="always")
def _unit(seed, i, j):
    """A uniform double in [0, 1) that depends only on (seed, i, j)."""
    x = np.uint64(seed) * _GOLDEN + np.uint64(i) * np.uint64(0xD1B54A32D192ED03) + np.uint64(j) * _GOLDEN
    return float(_splitmix64(x) >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@njit(cache=True, inline="always")
def _helper1(x):
    if abs(x) > 1e-8:
        return np.log1p(x) / x
    return 1.0 - x * (0.5 - x * (1.0 / 3.0 - 0.25 * x))


@njit(cache=True, inline="always")
def _helper2(x):
    if abs(x) > 1e-8:
        return np.expm1(x) / x
    return 1.0 + x * 0.5 * (1.0 + x * (1.0 / 3.0) * (1.0 + 0.25 * x))


@njit(cache=True, inline="always")
def _h_integral(x, s):
    log_x = np.log(x)
    return _helper2((1.0 - s) * log_x) * log_x


@njit(cache=True, inline="always")
def _h_integral_inverse(x, s):
    t = x * (1.0 - s)
    if t < -1.0:
        t = -1.0
    return np.exp(_helper1(t) * x)


@njit(cache=True)
def _zipf_tail_page(seed, i, s, a, n, hxa, hxn, shortcut):
    """Rejection-inversion sample (Hoermann and Derflinger 1996) of rank k in
    [a, n] with P(k) ~ k**-s, returned as page k-1; hxa, hxn and shortcut come
    from _zipf_tail_constants. Draws _unit(seed, i, 1), (seed, i, 2), ..."""
    j = 1
    while True:
        u = hxn + _unit(seed, i, j) * (hxa - hxn)
        x = _h_integral_inverse(u, s)
        k = int(x + 0.5)
        if k < a:
            k = a
        elif k > n:
            k = n
        # k - x <= shortcut accepts at once for every k >= 2 (the bound is the one at k = 2)
        if k - x <= shortcut or u >= _h_integral(k + 0.5, s) - np.exp(-s * np.log(k)):
            return k - 1
        j += 1


@njit(cache=True)
def _zipf_tail_constants(s, a, n):
    hxa = _h_integral(a + 0.5, s) - np.exp(-s * np.log(a))
    hxn = _h_integral(n + 0.5, s)
    shortcut = 2.0 - _h_integral_inverse(_h_integral(2.5, s) - np.exp(-s * np.log(2.0)), s)
    return hxa, hxn, shortcut


@njit(cache=True)
def _alias_build(w):
    """Walker's alias table (Vose's construction) for weights w: draw j
    uniformly, keep it with probability prob[j], else take alias[j]."""
    n = w.shape[0]
    prob = w * (n / w.sum())
    alias = np.arange(n).astype(np.int32)
    small = np.empty(n, dtype=np.int64)
    large = np.empty(n, dtype=np.int64)
    ns = nl = 0
    for j in range(n):
        if prob[j] < 1.0:
            small[ns] = j
            ns += 1
        else:
            large[nl] = j
            nl += 1
    while ns > 0 and nl > 0:
        ns -= 1
        sj = small[ns]
        lj = large[nl - 1]
        alias[sj] = lj
        prob[lj] -= 1.0 - prob[sj]
        if prob[lj] < 1.0:
            nl -= 1
            small[ns] = lj
            ns += 1
    prob[small[:ns]] = 1.0
    prob[large[:nl]] = 1.0
    return prob, alias


def _power_sum(s: float, a: int, b: int) -> float:
    """sum of k**-s for k in [a, b], by Euler-Maclaurin to the third
    derivative (for a >= ZIPF_HEAD the remainder is below 1e-15 of the sum)."""
    def f(x):
        return x ** -s

    integral = np.log(b / a) if s == 1.0 else (b ** (1 - s) - a ** (1 - s)) / (1 - s)
    d1 = -s * (b ** (-s - 1) - a ** (-s - 1))
    d3 = -s * (s + 1) * (s + 2) * (b ** (-s - 3) - a ** (-s - 3))
    return integral + (f(a) + f(b)) / 2 + d1 / 12 - d3 / 720


@lru_cache(maxsize=64)
def zipf_table(s: float, npages: int) -> tuple[np.ndarray, np.ndarray]:
    """Alias table of zipf(s) over npages: outcomes 0 .. head-1 are pages,
    outcome ZIPF_HEAD (present when npages > ZIPF_HEAD) is the tail. Cached
    and shared: read it, never write it."""
    head = min(npages, ZIPF_HEAD)
    w = np.arange(1, head + 1, dtype=np.float64) ** -s
    if npages > ZIPF_HEAD:
        w = np.append(w, _power_sum(s, ZIPF_HEAD + 1, npages))
    return _alias_build(w)


@njit(cache=True, inline="always")
def _zipf_draw(seed, i, s, n, prob, alias, off, hxa, hxn, shortcut):
    """Page of touch i of zipf(s) over n pages, with the alias table at prob[off:]."""
    m = min(n, ZIPF_HEAD) + (1 if n > ZIPF_HEAD else 0)
    x = _splitmix64(np.uint64(seed) * _GOLDEN + np.uint64(i) * np.uint64(0xD1B54A32D192ED03))
    j = int(((x >> np.uint64(32)) * np.uint64(m)) >> np.uint64(32))
    if float(x & np.uint64(0xFFFFFFFF)) * (1.0 / 4294967296.0) >= prob[off + j]:
        j = alias[off + j]
    if j < ZIPF_HEAD:
        return j
    return _zipf_tail_page(seed, i, s, ZIPF_HEAD + 1, n, hxa, hxn, shortcut)


@njit(cache=True)
def _pattern_fill(kind, seed, a, b, n, i0, out, prob, alias, off):
    """Write the pages of touches i0 .. i0+len(out)-1 of a pattern over n pages
    into out; a zipf pattern's alias table is at prob[off:], alias[off:]."""
    m = out.shape[0]
    if kind == PAT_SEQUENTIAL:
        start = int(a)
        stride = int(b)
        for t in range(m):
            out[t] = (start + (i0 + t) * stride) % n
    elif kind == PAT_UNIFORM:
        for t in range(m):
            out[t] = min(int(_unit(seed, i0 + t, 0) * n), n - 1)
    elif kind == PAT_ZIPF:
        hxa, hxn, shortcut = _zipf_tail_constants(a, ZIPF_HEAD + 1, n)
        for t in range(m):
            out[t] = _zipf_draw(seed, i0 + t, a, n, prob, alias, off, hxa, hxn, shortcut)
    else:  # PAT_HOTSET
        nhot = max(1, min(n, int(a * n)))
        ncold = n - nhot
        for t in range(m):
            u = _unit(seed, i0 + t, 0)
            v = _unit(seed, i0 + t, 1)
            if ncold == 0 or u < b:
                out[t] = min(int(v * nhot), nhot - 1)
            else:
                out[t] = nhot + min(int(v * ncold), ncold - 1)
