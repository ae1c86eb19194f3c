"""Fréchet distance and polynomial-kernel MMD: values against independent computations."""

import numpy as np
import pytest
import scipy.linalg

from vidgan_cli.metrics.frechet import (
    frechet_distance,
    frechet_from_features,
    gaussian_stats,
    polynomial_mmd,
    trace_sqrt_product,
)


def correlated(rng, n, d, shift=0.0):
    mix = rng.normal(size=(d, d)) / np.sqrt(d)
    return rng.normal(size=(n, d)) @ mix + shift


def scipy_frechet(x, y):
    mu1, mu2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


@pytest.mark.parametrize("d", [4, 32])
def test_frechet_matches_scipy_sqrtm(d):
    rng = np.random.default_rng(d)
    x, y = correlated(rng, 2000, d), correlated(rng, 1500, d, shift=0.3)
    ours, ref = frechet_from_features(x, y), scipy_frechet(x, y)
    assert ours == pytest.approx(ref, rel=1e-6)
    assert ours > 0.1


def test_frechet_zero_for_identical_statistics_and_symmetric():
    rng = np.random.default_rng(0)
    x, y = correlated(rng, 500, 16), correlated(rng, 400, 16, shift=0.2)
    mu, sigma = gaussian_stats(x)
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-9)
    assert frechet_from_features(x, x) == pytest.approx(0.0, abs=1e-9)
    assert frechet_from_features(x, y) == pytest.approx(frechet_from_features(y, x), rel=1e-9)


def test_frechet_stable_for_singular_covariances():
    """Fewer samples than dimensions: rank-deficient covariances, still real, exact and symmetric."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(10, 64))
    shift = rng.normal(size=64)
    value = frechet_from_features(x, x + shift)  # same covariance, mean moved by `shift`
    assert np.isfinite(value)
    assert value == pytest.approx(float(shift @ shift), rel=1e-6)
    y = rng.normal(size=(12, 64))
    assert frechet_from_features(x, y) == pytest.approx(frechet_from_features(y, x), rel=1e-8)
    assert frechet_from_features(x, y) > 0


def test_trace_sqrt_product_of_diagonal_matrices():
    a, b = np.diag([1.0, 4.0, 9.0]), np.diag([4.0, 1.0, 0.0])
    assert trace_sqrt_product(a, b) == pytest.approx(2 + 2 + 0)


def test_frechet_rejects_mismatched_or_bad_input():
    with pytest.raises(ValueError, match="mismatched"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match="N >= 2"):
        frechet_from_features(np.zeros((1, 3)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match="non-finite"):
        frechet_from_features(np.full((4, 3), np.nan), np.zeros((5, 3)))


def naive_mmd(x, y, degree=3):
    k = lambda a, b: (a @ b / x.shape[1] + 1) ** degree  # noqa: E731
    m, n = len(x), len(y)
    kxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kyy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    kxy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return kxx + kyy - 2 * kxy


def test_polynomial_mmd_matches_naive_unbiased_estimator():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(12, 5)), rng.normal(size=(9, 5)) + 0.5
    assert polynomial_mmd(x, y) == pytest.approx(naive_mmd(x, y), rel=1e-10)
    assert polynomial_mmd(x, y) == pytest.approx(polynomial_mmd(y, x), rel=1e-10)


def test_polynomial_mmd_near_zero_for_same_distribution():
    rng = np.random.default_rng(3)
    same = polynomial_mmd(rng.normal(size=(600, 8)), rng.normal(size=(600, 8)))
    moved = polynomial_mmd(rng.normal(size=(600, 8)), rng.normal(size=(600, 8)) + 1.0)
    assert abs(same) < 0.02 < moved
    with pytest.raises(ValueError, match="feature sizes differ"):
        polynomial_mmd(np.zeros((3, 2)), np.zeros((3, 4)))
