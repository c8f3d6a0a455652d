"""Number formats against independent oracles: TensorFlow's casts, numpy's float16,
hand-worked TF32 roundings and TensorFlow's fake quantization."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from workers.diagnosis.formats import (
    int8_weights,
    on_grid,
    quantization_grid,
    to_bfloat16,
    to_float16,
    to_tf32,
)


def _float32_values(seed: int) -> np.ndarray:
    """Random float32 values over many binades and both signs, with the edge cases (no
    float32 subnormals: TensorFlow's CPU kernels flush them to zero)."""
    rng = np.random.default_rng(seed)
    spread = rng.choice([-1.0, 1.0], 4000) * np.exp(rng.uniform(-30.0, 30.0, 4000))
    edges = [0.0, -0.0, np.inf, -np.inf, np.nan, np.finfo(np.float32).max, 2**-126]
    return np.concatenate([spread, edges]).astype(np.float32)


def test_bfloat16_matches_tensorflow(tf: Any) -> None:
    ties = np.float32([1 + 2**-8, 1 + 3 * 2**-8, -(1 + 2**-8)])
    values = np.concatenate([_float32_values(1), ties])
    expected = tf.cast(tf.cast(values, tf.bfloat16), tf.float64).numpy()
    assert np.array_equal(to_bfloat16(values), expected, equal_nan=True)
    assert to_bfloat16(ties).tolist() == [1.0, 1 + 2**-6, -1.0]
    # Below float32's normal range bfloat16 steps by 2**-133: 0.75 of a step rounds up.
    assert to_bfloat16(np.float32([3 * 2**-135])).tolist() == [2**-133]


def test_float16_matches_numpy_and_tensorflow(tf: Any) -> None:
    values = _float32_values(2)
    expected = tf.cast(tf.cast(values, tf.float16), tf.float64).numpy()
    assert np.array_equal(to_float16(values), expected, equal_nan=True)
    with np.errstate(over="ignore"):
        half = values.astype(np.float16).astype(np.float64)
    assert np.array_equal(to_float16(values), half, equal_nan=True)


def test_tf32_rounds_to_ten_mantissa_bits_ties_to_even() -> None:
    cases = {
        1 + 2**-11: 1.0,  # a tie: to the even neighbour, 1
        1 + 3 * 2**-11: 1 + 2**-9,  # a tie: to the even neighbour, 1 + 2**-9
        1 + 2**-11 + 2**-20: 1 + 2**-10,  # just above a tie
        1 + 2**-10: 1 + 2**-10,  # representable
        -(1 + 3 * 2**-11): -(1 + 2**-9),
        3 * 2**-137: 2**-135,  # a tie on TF32's subnormal grid (steps of 2**-136)
        2.0**100 * (1 + 2**-11 + 2**-20): 2.0**100 * (1 + 2**-10),  # float32's exponent range
    }
    values = np.array(list(cases), dtype=np.float32)
    assert to_tf32(values).tolist() == list(cases.values())
    special = to_tf32(np.float32([np.inf, -np.inf, np.nan]))
    assert special[0] == np.inf and special[1] == -np.inf and np.isnan(special[2])


def test_tf32_agrees_with_float16_over_its_normal_range() -> None:
    """Both keep 10 mantissa bits: where float16 is normal they round alike."""
    rng = np.random.default_rng(3)
    values = (rng.choice([-1.0, 1.0], 4000) * np.exp(rng.uniform(-9.0, 11.0, 4000))).astype(
        np.float32
    )
    assert np.array_equal(to_tf32(values), values.astype(np.float16).astype(np.float64))


def test_int8_weights_match_tensorflow_fake_quantization(tf: Any) -> None:
    """Per output channel, symmetric: TensorFlow's narrow 8-bit range over [-max|w|, max|w|]."""
    rng = np.random.default_rng(4)
    kernel = (rng.normal(0.0, 1.0, (3, 3, 4, 6)) * rng.uniform(0.01, 10.0, 6)).astype(np.float32)
    limit = np.abs(kernel).max(axis=(0, 1, 2))
    expected = tf.quantization.fake_quant_with_min_max_vars_per_channel(
        kernel, -limit, limit, num_bits=8, narrow_range=True
    ).numpy()
    found = int8_weights(kernel.astype(np.float64))
    np.testing.assert_allclose(found, expected, rtol=0, atol=1e-6 * limit.max())
    levels = [np.unique(np.round(found[..., c] / (limit[c] / 127))).size for c in range(6)]
    assert max(levels) <= 255


def test_quantization_grid_reads_the_step_of_a_grid() -> None:
    rng = np.random.default_rng(5)
    positions = np.concatenate([[0, 1, 200], rng.integers(0, 201, 300)])
    values = (-1.3 + positions * 0.02).astype(np.float32)
    step, low = quantization_grid(values.astype(np.float64))
    assert step == pytest.approx(0.02, rel=1e-4) and low == pytest.approx(-1.3, rel=1e-6)
    off = values.astype(np.float64) + 0.004
    assert np.allclose(on_grid(off, step, low), values, rtol=0, atol=1e-6)


def test_quantization_grid_is_none_off_any_grid() -> None:
    rng = np.random.default_rng(6)
    assert quantization_grid(rng.normal(0.0, 1.0, 500)) is None
    assert quantization_grid(np.float32([0.25, 0.25])) is None
    assert quantization_grid(np.arange(1000) * 0.01) is None  # more than 256 levels
