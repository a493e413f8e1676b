"""Page-touch patterns: deterministic, chunk-invariant, in range, and drawn from
the distribution they claim. Every seed is fixed and every tolerance is several
standard deviations wide, so nothing here can flake."""
from __future__ import annotations

import numpy as np
import pytest
from numba import njit

import cowbench as cb
from cowbench._engine.abi import PAT_SEQUENTIAL
from cowbench._engine.draws import (ZIPF_BUCKET_SKEW, ZIPF_HEAD, ZIPF_MAX_BUCKETS, pattern_fill, power_sum,
                                    zipf_bucket_page, zipf_table)
from cowbench.patterns import Pattern

PATTERNS = [
    cb.uniform(5000, seed=1),
    cb.uniform(5000, seed=2**62 + 12345),
    cb.zipf(5000, s=1.1, seed=3),
    cb.zipf(5000, s=0.5, seed=4),
    cb.zipf(5000, s=3.0, seed=5),
    cb.zipf(5000, s=1.0, seed=6),
    cb.hotset(5000, hot=0.1, p_hot=0.9, seed=7),
    cb.hotset(5000, hot=0.0, p_hot=0.5, seed=8),
    cb.hotset(5000, hot=1.0, p_hot=0.5, seed=9),
    Pattern(PAT_SEQUENTIAL, 5000, 0, 3.0, 7.0),
]
IDS = [repr(p) for p in PATTERNS]


def fill(p: Pattern, n: int, i0: int, m: int) -> np.ndarray:
    out = np.empty(m, dtype=np.int64)
    pattern_fill(p.kind, p.seed, p.a, p.b, n, i0, out, p.table(n), 0, np.empty_like(out))
    return out


@pytest.mark.parametrize("p", PATTERNS, ids=IDS)
@pytest.mark.parametrize("n", [1, 2, 7, 1000, 10**9])
def test_pages_are_in_range(p, n):
    pages = p.pages(n)
    assert pages.dtype == np.int64 and len(pages) == p.count
    assert pages.min() >= 0 and pages.max() < n


@pytest.mark.parametrize("p", PATTERNS, ids=IDS)
def test_chunk_invariance(p):
    """Touch i's page depends only on (seed, i): any chunking gives the same pages."""
    n = 777
    whole = fill(p, n, 0, p.count)
    rng = np.random.default_rng(0)
    cuts = np.sort(rng.choice(np.arange(1, p.count), size=40, replace=False))
    pieces = [fill(p, n, int(a), int(b - a)) for a, b in zip(np.r_[0, cuts], np.r_[cuts, p.count])]
    np.testing.assert_array_equal(np.concatenate(pieces), whole)
    for m in (1, 3, 64, 1000):
        chunks = [fill(p, n, i, min(m, p.count - i)) for i in range(0, p.count, m)]
        np.testing.assert_array_equal(np.concatenate(chunks), whole)
    np.testing.assert_array_equal(p.pages(n), whole)


@pytest.mark.parametrize("p", PATTERNS, ids=IDS)
def test_deterministic(p):
    np.testing.assert_array_equal(p.pages(500), p.pages(500))
    same = Pattern(p.kind, p.count, p.seed, p.a, p.b)
    np.testing.assert_array_equal(same.pages(500), p.pages(500))


@pytest.mark.parametrize("make", [lambda s: cb.uniform(1000, seed=s), lambda s: cb.zipf(1000, s=0.8, seed=s),
                                  lambda s: cb.hotset(1000, seed=s)])
def test_different_seeds_differ(make):
    assert not np.array_equal(make(1).pages(1000), make(2).pages(1000))


def test_sequential_wraps_with_stride():
    np.testing.assert_array_equal(Pattern(PAT_SEQUENTIAL, 10, 0, 3.0, 2.0).pages(7),
                                  [(3 + 2 * i) % 7 for i in range(10)])
    np.testing.assert_array_equal(Pattern(PAT_SEQUENTIAL, 5, 0, 0.0, 1.0).pages(5), range(5))


def test_sequential_one_pass_through_a_scenario():
    """cb.sequential() with no count means one pass over the region: every page once."""
    sc = cb.Scenario(phys_mem=64 * 4096)
    p = sc.spawn()
    r = p.mmap("r", 10 * 4096)
    p.read(r, pages=cb.sequential())
    p.read(r, pages=cb.sequential(start=4, stride=3))
    a, b = sc.ops[-2].pages, sc.ops[-1].pages
    np.testing.assert_array_equal(a.pages(10), range(10))
    np.testing.assert_array_equal(b.pages(10), [(4 + 3 * i) % 10 for i in range(10)])


def test_empty_patterns():
    for p in (cb.uniform(0), cb.zipf(0), cb.hotset(0), cb.sequential(0)):
        assert p.pages(10).shape == (0,)


# --- distributions -----------------------------------------------------------------------

def zipf_pmf(n: int, s: float) -> np.ndarray:
    w = np.arange(1, n + 1, dtype=np.float64) ** -s
    return w / w.sum()


def assert_binomial_counts(counts: np.ndarray, probs: np.ndarray, total: int, sigmas: float = 6.0) -> None:
    expected = probs * total
    sd = np.sqrt(total * probs * (1 - probs))
    bad = np.flatnonzero(np.abs(counts - expected) > sigmas * sd + 1e-9)
    assert bad.size == 0, [(int(k), int(counts[k]), float(expected[k])) for k in bad[:5]]


def chi_square(counts: np.ndarray, probs: np.ndarray, total: int) -> float:
    expected = probs * total
    return float(((counts - expected) ** 2 / expected).sum())


@pytest.mark.parametrize("n,s", [(50, 1.1), (1000, 1.1), (40, 0.5), (30, 2.5), (100, 1.0), (7, 8.0), (1, 1.1)])
def test_zipf_matches_the_bounded_pmf(n, s):
    """P(page k) = (k+1)^-s / H(n, s) exactly on [0, n): each of the top ranks
    within 6 standard deviations, and a chi-square over the top 20 ranks plus
    the tail well inside its distribution's 1e-9 quantile."""
    total = 400_000
    pages = cb.zipf(total, s=s, seed=20240601).pages(n)
    assert pages.min() >= 0 and pages.max() < n
    counts = np.bincount(pages, minlength=n).astype(np.float64)
    pmf = zipf_pmf(n, s)
    top = min(n, 20)
    assert_binomial_counts(counts[:top], pmf[:top], total)
    if n > top:
        c = np.r_[counts[:top], counts[top:].sum()]
        p = np.r_[pmf[:top], pmf[top:].sum()]
    else:
        c, p = counts, pmf
    keep = p * total >= 5
    c = np.r_[c[keep], c[~keep].sum()] if (~keep).any() else c
    p = np.r_[p[keep], p[~keep].sum()] if (~keep).any() else p
    df = max(len(c) - 1, 1)
    assert chi_square(c, p, total) < df + 13 * np.sqrt(2 * df) + 20
    assert counts.argmax() == 0


@pytest.mark.parametrize("s", [0.7, 1.1, 1.6])
def test_zipf_tail_beyond_the_alias_table_matches_the_pmf(s):
    """Past ZIPF_HEAD ranks pages come from buckets of ranks and a uniform
    proposal in the bucket, accepted with probability (lo/k)**s: the mass of
    the tail and of log-spaced bins inside it match the exact pmf (chi-square
    well inside its 1e-9 quantile)."""
    n, total = 300_000, 2_000_000
    pages = cb.zipf(total, s=s, seed=11).pages(n)
    pmf = zipf_pmf(n, s)
    edges = np.unique(np.r_[0, 1, 2, 10, 100, 1000, np.geomspace(ZIPF_HEAD, n, 12).astype(int), ZIPF_HEAD, n])
    counts = np.add.reduceat(np.bincount(pages, minlength=n), edges[:-1])
    probs = np.add.reduceat(pmf, edges[:-1])
    df = len(probs) - 1
    assert chi_square(counts, probs, total) < df + 13 * np.sqrt(2 * df) + 20
    tail = (pages >= ZIPF_HEAD).mean()
    assert abs(tail - pmf[ZIPF_HEAD:].sum()) < 6 * np.sqrt(pmf[ZIPF_HEAD:].sum() / total)


def test_zipf_page_zero_is_hottest_and_frequencies_fall():
    counts = np.bincount(cb.zipf(200_000, s=1.2, seed=1).pages(100), minlength=100)
    assert np.all(np.diff(counts[:8]) < 0)


@pytest.mark.parametrize("n,hot,p_hot", [(1000, 0.1, 0.9), (100, 0.25, 0.5), (10, 0.5, 0.99), (1000, 0.01, 0.0)])
def test_hotset_hot_fraction(n, hot, p_hot):
    """A touch lands in the first max(1, int(hot*n)) pages with probability p_hot,
    uniformly within the hot and within the cold set."""
    total = 200_000
    pages = cb.hotset(total, hot=hot, p_hot=p_hot, seed=99).pages(n)
    nhot = max(1, min(n, int(hot * n)))
    in_hot = int((pages < nhot).sum())
    sd = np.sqrt(total * p_hot * (1 - p_hot))
    assert abs(in_hot - p_hot * total) <= 6 * sd + 1e-9
    counts = np.bincount(pages, minlength=n)
    if in_hot:
        assert_binomial_counts(counts[:nhot], np.full(nhot, 1 / nhot), in_hot)
    if total - in_hot:
        assert_binomial_counts(counts[nhot:], np.full(n - nhot, 1 / (n - nhot)), total - in_hot)


def test_hotset_edges():
    assert set(cb.hotset(1000, hot=0.0, p_hot=1.0, seed=1).pages(50)) == {0}        # hot set of one page
    assert set(cb.hotset(1000, hot=0.5, p_hot=1.0, seed=1).pages(50)) <= set(range(25))
    assert set(cb.hotset(1000, hot=0.5, p_hot=0.0, seed=1).pages(50)) <= set(range(25, 50))
    all_hot = cb.hotset(20_000, hot=1.0, p_hot=0.0, seed=1).pages(50)       # no cold pages: all uniform
    assert set(all_hot) == set(range(50))


@pytest.mark.parametrize("n", [1, 2, 64, 1000, 3 * 2**40 + 1])
def test_uniform_covers_the_region_evenly(n):
    total = 200_000
    pages = cb.uniform(total, seed=5).pages(n)
    assert pages.min() >= 0 and pages.max() < n
    if n <= 1000:
        counts = np.bincount(pages, minlength=n).astype(np.float64)
        assert (counts > 0).all()
        probs = np.full(n, 1 / n)
        assert_binomial_counts(counts, probs, total)
        if n > 1:
            df = n - 1
            assert chi_square(counts, probs, total) < df + 13 * np.sqrt(2 * df) + 20
    else:   # a huge region: the draws spread over it (deciles even), no page repeats much
        deciles = np.bincount(pages * 10 // n, minlength=10)
        assert_binomial_counts(deciles.astype(np.float64), np.full(10, 0.1), total)


# --- the zipf table and its tail buckets ----------------------------------------------------

def table_parts(s: float, n: int):
    """The table, its number of outcomes m, each outcome's exact probability as
    the table draws it (slot j is hit by c_j of the 2**32 values of the high
    word), the number of slots each outcome takes part in, and the tail's bucket
    bounds (ranks)."""
    tab = zipf_table(s, n)
    m = int(tab[0])
    e = tab[1:1 + m]
    thr = (e >> np.uint64(32)).astype(np.float64) / 2**32
    alias = (e & np.uint64(0xFFFFFFFF)).astype(np.int64)
    c = ((np.arange(m + 1, dtype=np.int64) << 32) + m - 1) // m
    slot = np.diff(c) / 2**32
    p = slot * thr
    np.add.at(p, alias, slot * (1 - thr))
    fills = np.bincount(alias[alias != np.arange(m)], minlength=m) + 1      # slots each outcome takes part in
    return tab, m, p, fills, tab[1 + m:].astype(np.int64)


@pytest.mark.parametrize("n,s", [(1000, 1.1), (777, 3.0), (65536, 0.5), (300_000, 1.1), (5_000_000, 20.0),
                                 (10**9, 1.1)])
def test_zipf_table_is_exact_but_for_32_bit_thresholds(n, s):
    """Read the table rather than sample it: each outcome's probability (pages
    of the head, then tail buckets weighted by their exact mass) is right to
    2**-33 of a slot per slot it takes part in. Drawing the slot as
    (h * m) >> 32 without the per-slot capacities would be off by up to
    2**-32 per slot, m times more."""
    tab, m, p, fills, bounds = table_parts(s, n)
    assert not tab.flags.writeable
    head = min(n, ZIPF_HEAD)
    w = np.arange(1, head + 1, dtype=np.float64) ** -s
    if n > ZIPF_HEAD:
        assert bounds[0] == ZIPF_HEAD + 1 and bounds[-1] == n + 1 and (np.diff(bounds) >= 1).all()
        assert m == ZIPF_HEAD + len(bounds) - 1
        w = np.r_[w, power_sum(s, bounds[:-1], bounds[1:] - 1)]
    else:
        assert m == n and len(bounds) == 0
    w /= w.sum()
    slot = 1 / m + 2.0**-32                       # a slot's probability is c_j / 2**32, c_j <= 2**32 / m + 1
    assert np.all(np.abs(p - w) <= fills * 2.0**-33 * slot + 1e-14 * w)


@pytest.mark.parametrize("s", [0.05, 0.7, 1.0, 1.1, 2.5, 20.0])
@pytest.mark.parametrize("n", [70_000, 5_000_000, 10**9, 2**40])
def test_zipf_buckets_keep_acceptance_high_and_their_mass_is_exact(s, n):
    """Tail buckets have (hi/lo)**s <= 1.02 (a proposal is accepted with
    probability >= 1/1.02) unless that would take more than ZIPF_MAX_BUCKETS;
    their mass by Euler-Maclaurin matches a direct sum to 1e-12."""
    _, _, _, _, bounds = table_parts(s, n)
    lo, hi = bounds[:-1], bounds[1:] - 1
    assert len(lo) <= ZIPF_MAX_BUCKETS
    widest = max(ZIPF_BUCKET_SKEW, ((n + 1) / (ZIPF_HEAD + 1)) ** (s / ZIPF_MAX_BUCKETS))
    assert ((hi / lo) ** s).max() <= widest * (1 + 1e-12)
    for q in np.unique(np.linspace(0, len(lo) - 1, 5).astype(int)):
        if hi[q] - lo[q] < 2_000_000:
            k = np.arange(lo[q], hi[q] + 1, dtype=np.float64)
            assert power_sum(s, lo[q], hi[q]) == pytest.approx(np.sort(k ** -s).sum(), rel=1e-12)


@pytest.mark.parametrize("s,n", [(0.7, 300_000), (1.1, 300_000), (1.6, 300_000), (5.0, 300_000),
                                 (0.7, 5_000_000), (1.1, 5_000_000), (1.6, 5_000_000), (5.0, 5_000_000)])
def test_zipf_tail_is_exact_at_bucket_granularity(s, n):
    """Inside the tail, by bins that straddle tail-bucket edges (around every
    4th edge: the last part of one bucket, the first part of the next, the
    rest in between), the counts match the exact pmf, given the tail's count;
    and the tail's count matches its mass. At s = 5 the tail has no mass a
    run can draw (about 1e-20): test_zipf_bucket_draws_follow_the_pmf_inside_a_bucket
    covers the buckets themselves."""
    total = 3_000_000
    pages = cb.zipf(total, s=s, seed=2024).pages(n)
    assert pages.min() >= 0 and pages.max() < n
    _, _, _, _, bounds = table_parts(s, n)
    pmf = zipf_pmf(n, s)
    cuts = [ZIPF_HEAD]
    for e in bounds[1:-1:4] - 1:                      # rank e's page is e - 1: a bucket's first page
        w = max(2, (e - cuts[-1]) // 3)
        cuts += [e - w // 2, e, e + w // 2]
    cuts = np.unique(np.clip(np.r_[cuts, n], ZIPF_HEAD, n))
    counts = np.add.reduceat(np.bincount(pages, minlength=n)[ZIPF_HEAD:], cuts[:-1] - ZIPF_HEAD)
    probs = np.add.reduceat(pmf[ZIPF_HEAD:], cuts[:-1] - ZIPF_HEAD)
    tail_n, tail_p = int(counts.sum()), probs.sum()
    assert abs(tail_n - tail_p * total) < 6 * np.sqrt(total * tail_p * (1 - tail_p)) + 1e-9
    if s >= 5:
        assert tail_n == 0
        return
    probs = probs / tail_p
    keep = probs * tail_n >= 5
    c, p = counts[keep], probs[keep]
    if not keep.all():
        c, p = np.r_[c, counts[~keep].sum()], np.r_[p, probs[~keep].sum()]
    df = len(c) - 1
    assert df >= 15
    assert chi_square(c, p, tail_n) < df + 13 * np.sqrt(2 * df) + 20
    assert_binomial_counts(c.astype(np.float64), p, tail_n)


@njit
def bucket_draws(s, tab, b, count):
    """Pages of `count` touches as if each one's table outcome were tail bucket b."""
    out = np.empty(count, dtype=np.int64)
    for i in range(count):
        out[i] = zipf_bucket_page(3, i, s, tab, 0, tab[0], b)
    return out


@pytest.mark.parametrize("s", [0.7, 1.1, 1.6, 5.0, 20.0])
def test_zipf_bucket_draws_follow_the_pmf_inside_a_bucket(s):
    """Given its bucket, a tail page falls on rank k of [lo, hi] with
    probability proportional to k**-s. Across a bucket the pmf falls by up to
    2% (more where ZIPF_MAX_BUCKETS widens them); 16 M draws per bucket over 4
    bins see a uniform draw in the bucket (chi-square ~570), and a squeeze that
    accepts too much, 1 - s*d/2 (~160), well past the limit (55; ~4 if right)."""
    n, count = 5_000_000, 16_000_000
    _, m, _, _, bounds = table_parts(s, n)
    tab = zipf_table(s, n)
    for b in sorted({0, (m - ZIPF_HEAD) // 2, m - ZIPF_HEAD - 1}):
        lo, hi = int(bounds[b]), int(bounds[b + 1]) - 1
        pages = bucket_draws(s, tab, b, count)
        assert pages.min() >= lo - 1 and pages.max() <= hi - 1
        if hi - lo < 15:
            continue
        ranks = np.arange(lo, hi + 1, dtype=np.float64)
        w = ranks ** -s
        edges = np.linspace(0, hi - lo + 1, 5).astype(np.int64)
        counts = np.add.reduceat(np.bincount(pages - (lo - 1), minlength=hi - lo + 1), edges[:-1])
        probs = np.add.reduceat(w, edges[:-1]) / w.sum()
        assert chi_square(counts, probs, count) < 3 + 13 * np.sqrt(6) + 20
        assert_binomial_counts(counts.astype(np.float64), probs, count)


def test_zipf_chunk_invariance_with_a_tail():
    """Touches whose outcome is a tail bucket are drawn after the rest of a
    chunk: still, any chunking gives the same pages."""
    p = cb.zipf(6000, s=0.7, seed=12)
    n = 5_000_000
    whole = fill(p, n, 0, p.count)
    assert (whole >= ZIPF_HEAD).sum() > 1000
    for m in (1, 7, 64, 1000, 4096):
        chunks = [fill(p, n, i, min(m, p.count - i)) for i in range(0, p.count, m)]
        np.testing.assert_array_equal(np.concatenate(chunks), whole)
    np.testing.assert_array_equal(fill(p, n, 1234, 100), whole[1234:1334])


def test_zipf_over_a_billion_pages_stays_in_range_and_its_tail_has_its_mass():
    """n = 10**9, s = 1.1: ranks up to 1e9 come from buckets up to ~2e7 wide;
    the tail beyond ZIPF_HEAD, and the deep tail beyond 1e6 and 1e8, carry
    their mass (by Euler-Maclaurin, checked above)."""
    n, s, total = 10**9, 1.1, 2_000_000
    pages = cb.zipf(total, s=s, seed=5).pages(n)
    assert pages.min() >= 0 and pages.max() < n
    whole = (np.arange(1, ZIPF_HEAD + 1, dtype=np.float64) ** -s).sum() + power_sum(s, ZIPF_HEAD + 1, n)
    for edge in (ZIPF_HEAD, 10**6, 10**8):
        p = power_sum(s, edge + 1, n) / whole
        got = int((pages >= edge).sum())
        assert abs(got - p * total) < 6 * np.sqrt(total * p * (1 - p))
    assert (pages >= 10**8).sum() > 1000        # the deep tail is reached, not clipped


def splitmix64_numpy(seed: int, i: np.ndarray, j: int) -> np.ndarray:
    """draws.random_bits in NumPy (uint64 arithmetic wraps), written from the splitmix64 constants."""
    x = i.astype(np.uint64) * np.uint64(0xD1B54A32D192ED03) + np.uint64(
        (seed * 0x9E3779B97F4A7C15 + j * 0xF1357AEA2E62A9C5) % 2**64)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@pytest.mark.parametrize("n", [1, 2, 3, 7, 1000, 262_144, 10**9 + 7, 2**40, 2**40 - 1, 3 * 2**40 + 1, 2**51 + 3,
                               2**52, 2**62 + 5])
def test_uniform_page_is_the_unit_draw_times_n_rounded_down(n):
    """Page i is min(int(u * n), n - 1), u = (bits >> 11) / 2**53, as a double
    product truncated, whatever trick the kernel computes it by. Over 2**40
    pages a product is a whole number once in 2**13 draws, and about half of
    all products round up to the integer above them: the edges get tried."""
    seed, i0, count = 77, 10**6, 400_000
    got = cb.uniform(i0 + count, seed=seed).piece(i0, i0 + count).pages(n)
    u = (splitmix64_numpy(seed, np.arange(i0, i0 + count), 0) >> np.uint64(11)).astype(np.float64) * 2.0**-53
    want = np.minimum((u * float(n)).astype(np.int64), n - 1)
    np.testing.assert_array_equal(got, want)


def test_a_seeds_later_draws_are_not_the_next_seeds_first():
    """Touch i draws unit_draw(seed, i, 0), then (seed, i, 1), ...: children seeded
    1, 2, 3, ... must not share random numbers (they once did: j entered the
    hash exactly as the seed does)."""
    from cowbench._engine.draws import unit_draw
    from numba import njit

    @njit
    def draws(seed, j, n):
        return np.array([unit_draw(seed, i, j) for i in range(n)])

    n = 100_000
    for seed in (1, 2, 1000):
        first_of_next = draws(seed + 1, 0, n)
        for j in (1, 2):
            later = draws(seed, j, n)
            assert not np.any(later == first_of_next)
            assert abs(np.corrcoef(later, first_of_next)[0, 1]) < 6 / np.sqrt(n)
