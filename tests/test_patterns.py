"""Page-touch patterns: deterministic, chunk-invariant, in range, and drawn from
the distribution they claim. Every seed is fixed and every tolerance is several
standard deviations wide, so nothing here can flake."""
from __future__ import annotations

import numpy as np
import pytest

import cowbench as cb
from cowbench.patterns import ZIPF_HEAD, PAT_HOTSET, PAT_SEQUENTIAL, PAT_UNIFORM, PAT_ZIPF, Pattern, _pattern_fill

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
    prob, alias = p.table(n)
    _pattern_fill(p.kind, p.seed, p.a, p.b, n, i0, out, prob, alias, 0)
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
    """Past ZIPF_HEAD ranks pages come from rejection-inversion, not the
    table: the mass of the tail and of log-spaced bins inside it match the
    exact pmf (chi-square well inside its 1e-9 quantile)."""
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
