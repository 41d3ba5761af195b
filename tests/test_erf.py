"""The error function behind the exact GELU (Cody's rational approximations, evaluated in
chunks): against math.erf on a dense grid of both signs out to the tails, at the ranges'
edges, on subnormals, on nan and +-inf, in float32, and across chunk boundaries; and the
GELU built on it against PyTorch's in float64."""

from __future__ import annotations

import math

import numpy as np
import pytest

import netspec.ops.modern_activations as activations
from netspec.ops.modern_activations import erf

# the ranges' edges (0.46875, 4, 6) and their neighbours
EDGES = np.array([edge + step for edge in (0.46875, 4.0, 6.0)
                  for step in (-1e-12, 0.0, 1e-12)])


def reference(z: np.ndarray) -> np.ndarray:
    return np.array([math.erf(float(v)) for v in z.ravel()]).reshape(z.shape)


def test_float64_is_within_a_few_ulps_of_math_erf_everywhere() -> None:
    magnitudes = np.concatenate([np.linspace(0, 9, 180_001), np.geomspace(1e-300, 30, 20_001),
                                 EDGES])
    z = np.concatenate([magnitudes, -magnitudes])
    expected, got = reference(z), erf(z)
    assert got.dtype == np.float64 and got.shape == z.shape
    assert np.abs(got - expected).max() <= 3e-16
    assert (np.abs(got - expected) / np.maximum(np.abs(expected), 1e-300)).max() <= 5e-16


def test_special_values_are_c_s() -> None:
    got = erf(np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 40.0, -1e300]))
    assert np.isnan(got[0])
    np.testing.assert_array_equal(got[1:], [1.0, -1.0, 0.0, -0.0, 1.0, -1.0])
    assert np.signbit(got[4])


def test_subnormals_are_within_one_spacing() -> None:
    tiny = np.geomspace(5e-324, 2.2e-308, 2001)
    z = np.concatenate([tiny, -tiny])
    assert np.abs(erf(z) - reference(z)).max() <= 5e-324


def test_float32_is_computed_in_float32_within_a_few_ulps() -> None:
    z = np.concatenate([np.linspace(-7, 7, 40_001), EDGES, -EDGES]).astype(np.float32)
    got = erf(z)
    assert got.dtype == np.float32
    expected = reference(z.astype(np.float64))
    ulp = np.spacing(np.abs(expected).astype(np.float32)).astype(np.float64)
    assert (np.abs(got - expected) / ulp).max() <= 8


def test_chunks_give_the_values_of_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    z = np.random.default_rng(0).standard_normal((3, 101, 7)) * 3
    whole = erf(z)
    monkeypatch.setattr(activations, "_ERF_CHUNK", 64)
    chunked = erf(z)
    assert chunked.shape == z.shape
    np.testing.assert_array_equal(chunked, whole)
    np.testing.assert_allclose(chunked, reference(z), rtol=0, atol=3e-16)


def test_a_wrong_coefficient_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    # negative control: one coefficient of the middle range off in its 12th digit
    top, bottom = activations._ERF_R2
    monkeypatch.setattr(activations, "_ERF_R2", ((top[0] * (1 + 1e-12), *top[1:]), bottom))
    z = np.linspace(0.5, 3.9, 1001)
    assert np.abs(erf(z) - reference(z)).max() > 3e-16


def test_exact_gelu_matches_pytorch_in_float64() -> None:
    torch = pytest.importorskip("torch")
    from layer_harness import build_op, run_op

    x = np.concatenate([np.linspace(-8, 8, 20_001), [0.0, -0.0, 1e-300, -1e-300, 30.0, -30.0],
                        EDGES * math.sqrt(2), -EDGES * math.sqrt(2)])[None, :]
    y, _, _ = run_op(build_op("gelu"), [x], {}, {}, False, 0)
    expected = torch.nn.functional.gelu(torch.from_numpy(x)).numpy()
    nonzero = expected != 0
    np.testing.assert_array_equal(y[~nonzero], 0.0)
    assert (np.abs(y - expected)[nonzero] / np.abs(expected[nonzero])).max() < 1e-12
