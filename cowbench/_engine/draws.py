"""The page-set generators, jitted: uniform, zipf, sequential, hotset (cowbench's own).

A pattern is only a recipe (kind, count, seed, two parameters; cowbench/patterns.py
builds and checks them): the engine asks `pattern_fill` for the pages of
touches [i0, i0 + len(out)) into a small buffer, so a billion touches never
become a billion-element array. Every draw comes from a counter-based
generator (splitmix64 of seed and touch index), so page i is the same whichever
chunk computes it: results do not depend on chunk size, and the same seed gives
the same pages on every machine. zipf draws from one alias table (one random
number and one table read a touch) whose outcomes are its ZIPF_HEAD hottest
pages and, beyond them, geometric buckets of ranks; a touch that lands in a
bucket takes a uniform rank in it, kept with probability (lo/rank)**s (nearly
always, by construction).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from numba import njit

from .abi import PAT_SEQUENTIAL, PAT_UNIFORM, PAT_ZIPF

ZIPF_HEAD = 1 << 16     # pages a zipf alias table has one outcome each for; the tail beyond is bucketed
ZIPF_BUCKET_SKEW = 1.02  # bound on (hi/lo)**s in a tail bucket: a proposal is accepted with probability >= 1/1.02
ZIPF_MAX_BUCKETS = 2048  # at most this many tail buckets (wider ones when s and the region are large)

# --- random numbers: counter-based, so a draw depends only on (seed, touch, j) --------------

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_STEP = np.uint64(0xD1B54A32D192ED03)
_DRAW = np.uint64(0xF1357AEA2E62A9C5)     # odd, unrelated to _GOLDEN: draw j of seed s is not draw 0 of seed s+j
NO_TABLE = np.zeros(0, dtype=np.uint64)    # the table of every pattern but zipf
NO_TABLE.flags.writeable = False           # read-only like zipf's: one Numba specialisation


@njit(cache=True, inline="always")
def splitmix64(x):
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


@njit(cache=True, inline="always")
def random_bits(seed, i, j):
    """64 random bits that depend only on (seed, i, j)."""
    return splitmix64(np.uint64(seed) * _GOLDEN + np.uint64(i) * _STEP + np.uint64(j) * _DRAW)


@njit(cache=True, inline="always")
def unit_draw(seed, i, j):
    """A uniform double in [0, 1) that depends only on (seed, i, j)."""
    return float(random_bits(seed, i, j) >> np.uint64(11)) * (1.0 / 9007199254740992.0)


# --- zipf tables ----------------------------------------------------------------
#
# One uint64 array per (s, npages), laid out as
#   [m] [m packed alias entries] [nb + 1 bucket bounds]        (nb = m - ZIPF_HEAD; none if npages <= ZIPF_HEAD)
# Outcome j < ZIPF_HEAD is page j; outcome ZIPF_HEAD + b is tail bucket b, ranks
# bounds[b] .. bounds[b+1] - 1 (rank = page + 1). An entry is
# (threshold << 32) | alias: a draw lands in slot j and keeps j when its low 32
# random bits are below the threshold, else takes the alias. The engine
# concatenates several such tables and hands the kernels one array and an offset.

_LO32 = np.uint64(0xFFFFFFFF)
_TWO32 = 4294967296.0


def power_sum(s: float, a, b):
    """sum of k**-s for k in [a, b] (arrays welcome), by Euler-Maclaurin to the
    third derivative; differences are taken with expm1 so that narrow buckets
    and s near 1 lose no digits. The remainder is of the order of
    s(s+1)...(s+4) / 30240 * a**-5 of the sum: < 1e-20 relative for a > ZIPF_HEAD,
    so the float64 evaluation (~1e-15) is what limits it."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    lr = np.log1p((b - a) / a)                                  # log(b / a)

    def diff(p):                                                # b**p - a**p
        return a ** p * np.expm1(p * lr)

    integral = lr if s == 1.0 else diff(1.0 - s) / (1.0 - s)
    d1 = -s * diff(-s - 1.0)
    d3 = -s * (s + 1) * (s + 2) * diff(-s - 3.0)
    return integral + (a ** -s + b ** -s) / 2 + d1 / 12 - d3 / 720


@njit(cache=True)
def alias_build(w):
    """Walker's alias table (Vose's construction) for weights w, packed as
    (threshold << 32) | alias, for the draw of zt_outcome: slot
    j = (h * m) >> 32 of a uniform 32-bit h, kept when the low 32 bits are below
    its threshold. Slot j is hit by c_j = ceil((j+1) 2**32 / m) - ceil(j 2**32 / m)
    values of h, not exactly 2**32 / m, so each slot is filled to its own
    capacity c_j m / 2**32: outcome probabilities are exact but for the rounding
    of each threshold to a multiple of 2**-32 (entries kept whole are exact)."""
    m = w.shape[0]
    j = np.arange(m + 1).astype(np.int64)
    c = ((j << 32) + (m - 1)) // m                      # ceil(j 2**32 / m)
    cap = (c[1:] - c[:-1]).astype(np.float64) * (m / _TWO32)
    prob = w * (m / w.sum())
    alias = np.arange(m).astype(np.int64)
    small = np.empty(m, dtype=np.int64)
    large = np.empty(m, dtype=np.int64)
    ns = nl = 0
    for k in range(m):
        if prob[k] < cap[k]:
            small[ns] = k
            ns += 1
        else:
            large[nl] = k
            nl += 1
    while ns > 0 and nl > 0:
        ns -= 1
        sk = small[ns]
        lk = large[nl - 1]
        alias[sk] = lk
        prob[lk] -= cap[sk] - prob[sk]
        if prob[lk] < cap[lk]:
            nl -= 1
            small[ns] = lk
            ns += 1
    out = np.empty(m, dtype=np.uint64)
    for k in range(m):
        if alias[k] == k:           # kept whole (a threshold of 2**32 - 1 is exact: its alias is itself)
            thr = 4294967295
        else:
            thr = min(int(prob[k] / cap[k] * _TWO32 + 0.5), 4294967295)
        out[k] = (np.uint64(thr) << np.uint64(32)) | np.uint64(alias[k])
    return out


def zipf_buckets(s: float, npages: int) -> np.ndarray:
    """Rank bounds of the tail buckets over ranks ZIPF_HEAD+1 .. npages: bucket
    b is ranks bounds[b] .. bounds[b+1]-1, with hi / lo <= 1.02**(1/s), so that
    a uniform proposal is accepted with probability (lo/k)**s >= 1/1.02; wider
    (at most ZIPF_MAX_BUCKETS buckets) when that would take more buckets: only
    for large s and huge regions, where the tail's mass is negligible."""
    lo = ZIPF_HEAD + 1
    r = max(ZIPF_BUCKET_SKEW ** (1.0 / s), ((npages + 1) / lo) ** (1.0 / ZIPF_MAX_BUCKETS))
    bounds = [lo]
    while lo <= npages:
        lo = min(npages, max(lo, int(lo * r))) + 1
        bounds.append(lo)
    return np.array(bounds, dtype=np.int64)


@lru_cache(maxsize=64)
def zipf_table(s: float, npages: int) -> np.ndarray:
    """The zipf(s) table over npages (layout above). Cached and shared, hence
    read-only."""
    head = min(npages, ZIPF_HEAD)
    w = np.arange(1, head + 1, dtype=np.float64) ** -s
    bounds = np.zeros(0, dtype=np.int64)
    if npages > ZIPF_HEAD:
        bounds = zipf_buckets(s, npages)
        w = np.append(w, power_sum(s, bounds[:-1], bounds[1:] - 1))
    tab = np.concatenate([np.array([len(w)], dtype=np.uint64), alias_build(w), bounds.astype(np.uint64)])
    tab.flags.writeable = False
    return tab


@njit(cache=True, inline="always")
def zt_outcome(tab, off, m, x):
    """Outcome of the m-outcome alias table at tab[off:] for the random bits x:
    slot j from the high 32 bits, j or its alias by the low 32."""
    j = ((x >> np.uint64(32)) * m) >> np.uint64(32)
    e = tab[off + 1 + np.int64(j)]
    if (x & _LO32) >= (e >> np.uint64(32)):
        return np.int64(e & _LO32)
    return np.int64(j)


@njit(cache=True, inline="always")
def zt_bucket(tab, off, m, b):
    """Ranks lo, hi (inclusive) of tail bucket b of the m-outcome table at tab[off:]."""
    at = off + 1 + np.int64(m) + b
    return np.int64(tab[at]), np.int64(tab[at + 1]) - 1


@njit(cache=True)
def zipf_bucket_page(seed, i, s, tab, off, m, b):
    """Page of touch i of zipf(s) given that its alias outcome is tail bucket b:
    a rank k uniform in the bucket's [lo, hi], accepted with probability
    (lo/k)**s = (1+d)**-s, d = (k-lo)/lo, else proposed again. 1 - s*d is
    below (1+d)**-s (Bernoulli), so most proposals are accepted without exp
    and log1p. Draws unit_draw(seed, i, 1), (seed, i, 2), ..."""
    lo, hi = zt_bucket(tab, off, m, b)
    width = hi - lo + 1
    j = 1
    while True:
        k = lo + min(int(unit_draw(seed, i, j) * width), width - 1)
        d = (k - lo) / lo
        u = unit_draw(seed, i, j + 1)
        if u < 1.0 - s * d or u < np.exp(-s * np.log1p(d)):
            return k - 1
        j += 2


@njit(cache=True, inline="always")
def mulmod(x, y, n):
    """x * y mod n for 0 <= x, y < n < 2**36, in int64: y split into 18-bit halves."""
    return ((x * (y >> 18) % n) * (1 << 18) + x * (y & ((1 << 18) - 1))) % n


_TWO52 = 4503599627370496.0                  # 2**52: from it up to 2**53 a double's mantissa is an integer
_TWO52_BITS = np.int64(0x4330000000000000)   # the bits of the double 2**52


@njit(cache=True, inline="always")
def uniform_fill(seed, n, i0, out):
    """out[t] = min(int(unit_draw(seed, i0 + t, 0) * n), n - 1), bit for bit,
    in three branch-free loops. int() of a double is a scalar instruction on
    x86 without AVX-512 (1.3 of the 3 ns a draw took); here y = u * n, below
    2**52, is rounded to the nearest integer f by adding and subtracting
    2**52, f is stepped down where it rose above y, and f + 2**52 is read as
    an integer (its mantissa) through a view of out: 1.6 ns a draw."""
    m = out.shape[0]
    if n >= np.int64(1) << 52:                  # beyond any region, but Pattern.pages may be asked
        for t in range(m):
            out[t] = min(int(unit_draw(seed, i0 + t, 0) * n), n - 1)
        return
    bits = out.view(np.uint64)
    y = out.view(np.float64)
    for t in range(m):
        bits[t] = random_bits(seed, i0 + t, 0) >> np.uint64(11)
    for t in range(m):
        v = float(np.int64(bits[t])) * (1.0 / 9007199254740992.0) * n
        f = (v + _TWO52) - _TWO52
        y[t] = (f - 1.0 if f > v else f) + _TWO52
    for t in range(m):
        out[t] = min(out[t] - _TWO52_BITS, n - 1)


@njit(cache=True)
def pattern_fill(kind, seed, a, b, n, i0, out, ztab, off, scratch):
    """Write the pages of touches i0 .. i0+len(out)-1 of a pattern over n pages
    into out; a zipf pattern's table (see zipf_table) is at ztab[off:].
    scratch (int64, as long as out) is the caller's, so that a fill allocates nothing."""
    m = out.shape[0]
    if kind == PAT_SEQUENTIAL:
        # start and stride come reduced modulo n (Pattern.engine_params): page i is
        # (start + i * stride) mod n, stepped by additions so that nothing overflows
        stride = int(b)
        page = (int(a) + mulmod(i0 % n, stride, n)) % n
        for t in range(m):
            out[t] = page
            page += stride
            if page >= n:
                page -= n
    elif kind == PAT_UNIFORM:
        uniform_fill(seed, n, i0, out)
    elif kind == PAT_ZIPF:
        # This pattern's table as an array of its own: an index into it that is
        # offset + slot could be negative as far as the compiler knows, and
        # each lookup would pay for the wraparound check.
        tab = ztab[off:]
        nout = tab[0]
        # The random bits first, in a loop of their own (it vectorises), then
        # the table lookups, noting the touches that fell in a tail bucket
        # (over bits already read: nt <= t), then those: a branch to the tail
        # in the lookup loop would be mispredicted at each tail draw, which
        # costs more than the draw.
        bits = scratch.view(np.uint64)
        for t in range(m):
            bits[t] = random_bits(seed, i0 + t, 0)
        if np.int64(nout) <= ZIPF_HEAD:     # no tail: every outcome is a page
            for t in range(m):
                out[t] = zt_outcome(tab, 0, nout, bits[t])
            return
        tails = scratch
        nt = 0
        for t in range(m):
            k = zt_outcome(tab, 0, nout, bits[t])
            out[t] = k
            tails[nt] = t
            nt += k >= ZIPF_HEAD
        for q in range(nt):
            t = tails[q]
            out[t] = zipf_bucket_page(seed, i0 + t, a, tab, 0, nout, out[t] - ZIPF_HEAD)
    else:  # PAT_HOTSET
        nhot = max(1, min(n, int(a * n)))
        ncold = n - nhot
        for t in range(m):
            u = unit_draw(seed, i0 + t, 0)
            v = unit_draw(seed, i0 + t, 1)
            if ncold == 0 or u < b:
                out[t] = min(int(v * nhot), nhot - 1)
            else:
                out[t] = nhot + min(int(v * ncold), ncold - 1)
