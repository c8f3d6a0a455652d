"""The hypothesis library against candidates with one known cause each.

Every candidate is a Keras pass in float32, layer by layer in graph order, with one
layer's output replaced by that layer computed with the cause applied, built from
TensorFlow and Keras ops (never from workers.diagnosis or the numpy port, which
would only check the code against itself). The layers after it consume the
corrupted value, as a corrupted port does in accumulated mode, so the diagnosis
must pin the cause on that layer and on no other.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support import randomize_weights
from workers.backends.execution import run_locally
from workers.backends.pool import RunnerPool
from workers.diagnosis import diagnose as diagnose_module
from workers.diagnosis.diagnose import Budget, diagnose_outputs
from workers.diagnosis.hypotheses import HYPOTHESIS_IDS
from workers.engine.explanations import Explanation, LayerDiagnosis
from workers.engine.graph import ModelGraph
from workers.engine.loading import ModelArtifact, load_artifact
from workers.engine.metrics import DEFAULT_THRESHOLDS

BATCH = 4
WITHIN_ROUNDING = ("identical", "rounding")

# (tf, the Keras layer, its float32 input) -> the layer's output with the cause applied.
Corrupt = Callable[[Any, Any, Any], Any]


def _dense(keras: Any, activation: str) -> Any:
    return keras.Sequential(
        [
            keras.Input((10,), name="x"),
            keras.layers.Dense(16, activation="relu", name="d1"),
            keras.layers.Dense(12, activation=activation, name="d2"),
            keras.layers.Dense(4, name="d3"),
        ]
    )


def _conv(keras: Any, padding: str, strides: int) -> Any:
    return keras.Sequential(
        [
            keras.Input((6, 6, 3), name="x"),
            keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="c1"),
            keras.layers.Conv2D(5, 3, strides, padding=padding, activation="relu", name="c2"),
            keras.layers.Flatten(name="flat"),
            keras.layers.Dense(3, name="out"),
        ]
    )


def _batchnorm(keras: Any) -> Any:
    return keras.Sequential(
        [
            keras.Input((6, 6, 3), name="x"),
            keras.layers.Conv2D(4, 3, padding="same", name="c1"),
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.ReLU(name="relu"),
            keras.layers.GlobalAveragePooling2D(name="pool"),
            keras.layers.Dense(3, name="out"),
        ]
    )


def _gelu(keras: Any) -> Any:
    return keras.Sequential(
        [
            keras.Input((10,), name="x"),
            keras.layers.Dense(16, name="d1"),
            keras.layers.Activation("gelu", name="act"),
            keras.layers.Dense(3, name="out"),
        ]
    )


def _softmax(keras: Any) -> Any:
    return keras.Sequential(
        [
            keras.Input((4, 5), name="x"),
            keras.layers.Dense(8, activation="relu", name="d1"),
            keras.layers.Dense(6, activation="softmax", name="sm"),
            keras.layers.Flatten(name="flat"),
            keras.layers.Dense(3, name="out"),
        ]
    )


def _upsampling(keras: Any) -> Any:
    return keras.Sequential(
        [
            keras.Input((4, 4, 3), name="x"),
            keras.layers.Conv2D(4, 3, padding="same", name="c1"),
            keras.layers.UpSampling2D(2, interpolation="bilinear", name="up"),
            keras.layers.Conv2D(2, 3, name="c2"),
        ]
    )


MODELS: dict[str, Callable[[Any], Any]] = {
    "dense-tanh": lambda keras: _dense(keras, "tanh"),
    "dense-hard-sigmoid": lambda keras: _dense(keras, "hard_sigmoid"),
    "conv-valid": lambda keras: _conv(keras, "valid", 1),
    "conv-same": lambda keras: _conv(keras, "same", 1),
    "conv-same-stride2": lambda keras: _conv(keras, "same", 2),
    "batchnorm": _batchnorm,
    "gelu": _gelu,
    "softmax": _softmax,
    "upsampling": _upsampling,
}


def _spread_batchnorm(model: Any, seed: int) -> None:
    """Moving statistics far from (0, 1) and a gamma of both signs: with a variance
    near 1, dividing by it or by its square root would agree."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if layer.__class__.__name__ == "BatchNormalization":
            channels = layer.gamma.shape[0]
            layer.gamma.assign(rng.uniform(0.5, 2.0, channels) * rng.choice([-1, 1], channels))
            layer.beta.assign(rng.normal(0.0, 1.0, channels))
            layer.moving_mean.assign(rng.normal(0.0, 2.0, channels))
            layer.moving_variance.assign(np.exp(rng.uniform(np.log(0.02), np.log(20.0), channels)))


@dataclass(frozen=True)
class Built:
    """A model ready to corrupt: the Keras model, its artifact, inputs and reference."""

    model: Any
    artifact: ModelArtifact
    inputs: dict[str, np.ndarray]
    fed: dict[str, np.ndarray]

    @property
    def graph(self) -> ModelGraph:
        return self.artifact.graph


def prepared(model: Any, artifact: ModelArtifact, runner_pool: RunnerPool) -> Built:
    """The model with seeded inputs and its reference outputs from the float64 numpy port."""
    rng = np.random.default_rng(9)
    inputs = {
        layer: rng.normal(0.0, 1.0, (BATCH, *shape[1:])).astype(np.float32)
        for layer, shape in artifact.graph.input_shapes.items()
    }
    results = run_locally(runner_pool, artifact, inputs, backends=[], reference="numpy-f64")
    return Built(model, artifact, inputs, {**inputs, **results["numpy-f64"].outputs["accumulated"]})


@pytest.fixture(scope="module")
def built(
    keras: Any, runner_pool: RunnerPool, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str], Built]:
    """A model of MODELS by name with seeded non-trivial weights, prepared once per module."""
    directory = tmp_path_factory.mktemp("hypotheses")
    cache: dict[str, Built] = {}

    def get(name: str) -> Built:
        if name not in cache:
            model = MODELS[name](keras)
            randomize_weights(model, seed=7)
            _spread_batchnorm(model, seed=8)
            path = Path(directory) / f"{name}.keras"
            model.save(path)
            cache[name] = prepared(model, load_artifact(path), runner_pool)
        return cache[name]

    return get


def keras_pass(
    tf: Any, built: Built, corrupted: str | None = None, corrupt: Corrupt | None = None
) -> dict[str, np.ndarray]:
    """Every compute layer's float32 output from Keras, in graph order, each layer fed
    the outputs computed before it; `corrupted`'s output computed by `corrupt`."""
    values: dict[str, Any] = dict(built.inputs)
    for spec in built.graph.compute_layers:
        layer = built.model.get_layer(spec.name)
        args = [values[name] for name in spec.inbound]
        x = args[0] if len(args) == 1 else args
        out = corrupt(tf, layer, x) if spec.name == corrupted and corrupt else layer(x)
        values[spec.name] = np.asarray(out, dtype=np.float32)
    return {spec.name: values[spec.name] for spec in built.graph.compute_layers}


def diagnose(built: Built, candidate: dict[str, np.ndarray]) -> dict[str, LayerDiagnosis]:
    return diagnose_outputs(
        built.graph, candidate, built.fed, mode="accumulated", budget=Budget(60)
    )


# Oracles: the cause built from TensorFlow and Keras ops.


def _clone(layer: Any, x: Any, config: dict[str, Any] | None = None) -> Any:
    """A fresh copy of a Keras layer (its config changed), built for `x`."""
    copy = layer.__class__.from_config({**layer.get_config(), **(config or {})})
    copy.build(tuple(x.shape))
    return copy


def reweighted(change: Callable[[Any, str, np.ndarray], Any]) -> Corrupt:
    """The Keras layer with its weights changed (set_weights): `change(tf, name, value)`
    gives each weight's new value."""

    def corrupt(tf: Any, layer: Any, x: Any) -> Any:
        copy = _clone(layer, x)
        copy.set_weights(
            [
                np.asarray(change(tf, w.name, value), dtype=np.float32)
                for w, value in zip(layer.weights, layer.get_weights(), strict=True)
            ]
        )
        return copy(x)

    return corrupt


def only(name: str, change: Callable[[Any, np.ndarray], Any]) -> Callable[..., Any]:
    return lambda tf, weight, value: change(tf, value) if weight == name else value


def reactivated(function: Callable[[Any, Any], Any]) -> Corrupt:
    """The Keras layer without its activation, then `function(tf, z)` in its place."""

    def corrupt(tf: Any, layer: Any, x: Any) -> Any:
        copy = _clone(layer, x, {"activation": "linear"})
        copy.set_weights(layer.get_weights())
        return function(tf, copy(x))

    return corrupt


def output(function: Callable[[Any, Any], Any]) -> Corrupt:
    """The correct Keras output, transformed by `function(tf, y)`."""
    return lambda tf, layer, x: function(tf, layer(x))


def conv2d(padding: Any, crop_to_keras: bool = False) -> Corrupt:
    """The Conv2D layer through tf.nn.conv2d with another padding (explicit pads, or
    'SAME' cropped top-left to the layer's own output size)."""

    def corrupt(tf: Any, layer: Any, x: Any) -> Any:
        kernel, bias = layer.get_weights()
        y = tf.nn.conv2d(x, kernel, layer.strides, padding)
        if crop_to_keras:
            height, width = layer.compute_output_shape(tuple(x.shape))[1:3]
            y = y[:, :height, :width, :]
        return layer.activation(tf.nn.bias_add(y, bias))

    return corrupt


def resized(align_corners: bool) -> Corrupt:
    """TF 1's bilinear resize: the legacy pixel grid (source = i * in / out) or aligned
    corners, instead of Keras's half-pixel centres."""

    def corrupt(tf: Any, layer: Any, x: Any) -> Any:
        size = layer.compute_output_shape(tuple(x.shape))[1:3]
        return tf.compat.v1.image.resize_bilinear(
            x, size, align_corners=align_corners, half_pixel_centers=False
        )

    return corrupt


def stored_as(dtype: str) -> Corrupt:
    """Inputs, weights and output stored in `dtype` (tf.cast), the arithmetic in float32."""

    def corrupt(tf: Any, layer: Any, x: Any) -> Any:
        def narrow(value: Any) -> Any:
            return tf.cast(tf.cast(value, getattr(tf, dtype)), tf.float32)

        copy = _clone(layer, x)
        copy.set_weights([narrow(value).numpy() for value in layer.get_weights()])
        return narrow(copy(narrow(x)))

    return corrupt


def tf32(tf: Any, value: Any) -> Any:
    """TF32 rounding, from float16's: both keep 10 mantissa bits, so within float16's
    normal range (asserted) the two round alike."""
    value = np.asarray(value, dtype=np.float32)
    magnitude = np.abs(value[value != 0])
    assert magnitude.size == 0 or (magnitude.min() >= 2**-14 and magnitude.max() < 65504)
    return tf.cast(tf.cast(value, tf.float16), tf.float32)


def tf32_matmul(tf: Any, layer: Any, x: Any) -> Any:
    """The Dense's kernel and inputs rounded to TF32, the bias and the sums in float32."""
    copy = _clone(layer, x)
    copy.set_weights(
        [
            tf32(tf, value).numpy() if w.name == "kernel" else value
            for w, value in zip(layer.weights, layer.get_weights(), strict=True)
        ]
    )
    return copy(tf32(tf, x))


def int8_quantized(tf: Any, layer: Any, x: Any) -> Any:
    """TFLite's int8 convolution: the kernel fake-quantized per output channel on the
    symmetric narrow range (scale max|w| / 127), the output on an 8-bit grid over its
    range."""
    kernel, bias = layer.get_weights()
    limit = np.abs(kernel).max(axis=(0, 1, 2))
    kernel = tf.quantization.fake_quant_with_min_max_vars_per_channel(
        kernel, -limit, limit, num_bits=8, narrow_range=True
    )
    copy = _clone(layer, x)
    copy.set_weights([kernel.numpy(), bias])
    y = copy(x)
    return tf.quantization.fake_quant_with_min_max_vars(
        y, tf.reduce_min(y), tf.reduce_max(y), num_bits=8
    )


def flatten_into_dense(tf: Any, layer: Any, x: Any) -> Any:
    """A Dense fed its Flatten's (4, 4, 5) features in channels-first order."""
    grid = tf.reshape(x, (-1, 4, 4, 5))
    return layer(tf.reshape(tf.transpose(grid, (0, 3, 1, 2)), (-1, 80)))


def batchnorm(divisor: Callable[[Any, Any, float], Any]) -> Corrupt:
    """Inference batch normalisation, (x - mean) * gamma / divisor + beta, in TF ops."""

    def corrupt(tf: Any, layer: Any, x: Any) -> Any:
        gamma, beta, mean, variance = layer.get_weights()
        return (x - mean) * gamma / divisor(tf, variance, layer.epsilon) + beta

    return corrupt


@dataclass(frozen=True)
class Cause:
    hypothesis: str
    model: str
    layer: str
    corrupt: Corrupt
    name: str = ""

    @property
    def id(self) -> str:
        return f"{self.hypothesis}{'-' + self.name if self.name else ''}"


CAUSES = (
    Cause(
        "kernel-transposed",
        "dense-tanh",
        "d2",
        reweighted(only("kernel", lambda tf, w: tf.transpose(tf.reshape(w, w.shape[::-1])))),
        "read-as-out-in",
    ),
    Cause(
        "kernel-transposed",
        "dense-tanh",
        "d2",
        reweighted(only("kernel", lambda tf, w: tf.reshape(tf.transpose(w), w.shape))),
        "written-as-out-in",
    ),
    Cause(
        "conv-kernel-layout",
        "conv-same",
        "c2",
        reweighted(
            only(
                "kernel",
                lambda tf, w: tf.transpose(
                    tf.reshape(w, (w.shape[3], w.shape[2], w.shape[0], w.shape[1])), (2, 3, 1, 0)
                ),
            )
        ),
        "hwio-read-as-oihw",
    ),
    Cause(
        "channels-first-output",
        "conv-same",
        "c2",
        output(lambda tf, y: tf.reshape(tf.transpose(y, (0, 3, 1, 2)), tf.shape(y))),
    ),
    Cause(
        "flatten-order",
        "conv-valid",
        "flat",
        lambda tf, layer, x: tf.reshape(tf.transpose(x, (0, 3, 1, 2)), (x.shape[0], -1)),
        "flatten",
    ),
    Cause("flatten-order", "conv-valid", "out", flatten_into_dense, "dense"),
    Cause(
        "kernel-flipped",
        "conv-same",
        "c2",
        reweighted(only("kernel", lambda tf, w: tf.reverse(w, axis=[0, 1]))),
    ),
    Cause(
        "padding-same-vs-valid",
        "conv-valid",
        "c2",
        conv2d("SAME", crop_to_keras=True),
        "valid-computed-same",
    ),
    Cause(
        "padding-same-vs-valid",
        "conv-same",
        "c2",
        conv2d([[0, 0], [0, 2], [0, 2], [0, 0]]),
        "same-computed-unpadded",
    ),
    Cause(
        "padding-asymmetric",
        "conv-same-stride2",
        "c2",
        conv2d([[0, 0], [1, 0], [1, 0], [0, 0]]),
    ),
    Cause("bias-missing", "dense-tanh", "d2", reweighted(only("bias", lambda tf, b: 0 * b))),
    Cause("bias-doubled", "conv-same", "c2", reweighted(only("bias", lambda tf, b: 2 * b))),
    Cause(
        "bn-epsilon-missing",
        "batchnorm",
        "bn",
        batchnorm(lambda tf, variance, epsilon: tf.sqrt(variance)),
    ),
    Cause(
        "bn-variance-as-std",
        "batchnorm",
        "bn",
        batchnorm(lambda tf, variance, epsilon: variance + epsilon),
    ),
    Cause(
        "hard-sigmoid-keras2",
        "dense-hard-sigmoid",
        "d2",
        reactivated(lambda tf, z: tf.clip_by_value(0.2 * z + 0.5, 0.0, 1.0)),
    ),
    Cause(
        "gelu-approximation",
        "gelu",
        "act",
        lambda tf, layer, x: tf.nn.gelu(x, approximate=True),
    ),
    Cause("softmax-axis", "softmax", "sm", reactivated(lambda tf, z: tf.nn.softmax(z, axis=1))),
    Cause("upsampling-pixel-grid", "upsampling", "up", resized(False), "legacy"),
    Cause("upsampling-pixel-grid", "upsampling", "up", resized(True), "align-corners"),
    Cause("activation-missing", "dense-tanh", "d2", reactivated(lambda tf, z: z)),
    Cause(
        "float16-weights",
        "dense-tanh",
        "d2",
        reweighted(lambda tf, name, w: tf.cast(tf.cast(w, tf.float16), tf.float32)),
    ),
    Cause("float16-activations", "conv-same", "c2", stored_as("float16")),
    Cause("bfloat16", "conv-same", "c2", stored_as("bfloat16")),
    Cause("tf32-matmul", "dense-tanh", "d2", tf32_matmul),
    Cause("int8-quantization", "conv-same", "c2", int8_quantized),
)


def test_every_hypothesis_has_a_cause() -> None:
    assert sorted({cause.hypothesis for cause in CAUSES}) == sorted(HYPOTHESIS_IDS)


@pytest.mark.parametrize("cause", CAUSES, ids=[cause.id for cause in CAUSES])
def test_a_known_cause_is_pinned_on_its_layer(
    cause: Cause, tf: Any, built: Callable[[str], Built]
) -> None:
    model = built(cause.model)
    candidate = keras_pass(tf, model, cause.layer, cause.corrupt)
    found = diagnose(model, candidate)
    assert set(found) == {spec.name for spec in model.graph.compute_layers}
    corrupted = found[cause.layer]
    assert corrupted.local_verdict not in WITHIN_ROUNDING, corrupted
    assert corrupted.explained_by == cause.hypothesis, corrupted.diagnosis
    assert corrupted.diagnosis[0].explains
    # With the cause applied the layer is within rounding of the candidate; without, not.
    assert corrupted.diagnosis[0].rel_l2 <= corrupted.local_bound < corrupted.local_rel_l2
    for name, other in found.items():
        if name != cause.layer:
            assert other.local_verdict in WITHIN_ROUNDING, (name, other)
            assert other.explained_by is None


@pytest.mark.parametrize(
    ("model", "layer"), [("dense-tanh", "d2"), ("conv-same", "c2"), ("batchnorm", "bn")]
)
def test_an_unrelated_corruption_is_unexplained(
    model: str, layer: str, tf: Any, built: Callable[[str], Built]
) -> None:
    """20% relative noise on one layer's output is no cause of the library."""
    rng = np.random.default_rng(11)

    def noisy(tf: Any, keras_layer: Any, x: Any) -> Any:
        y = np.asarray(keras_layer(x))
        return y + 0.2 * np.sqrt(np.mean(y**2)) * rng.normal(size=y.shape)

    found = diagnose(built(model), keras_pass(tf, built(model), layer, noisy))
    assert found[layer].local_verdict == "mismatch"
    assert found[layer].diagnosis and not any(e.explains for e in found[layer].diagnosis)
    assert found[layer].explained_by == "unexplained"


def test_a_missing_bias_below_the_fixed_threshold_is_flagged_and_explained(
    keras: Any, tf: Any, save_model: Callable[..., ModelArtifact], runner_pool: RunnerPool
) -> None:
    """A Dense whose outputs are in the thousands (|y| up to 3.8e3, rms 2.1e3) with a bias
    of +-0.01: dropping the bias moves rel_l2 by only 4.8e-6, under the fixed 1e-5
    rounding threshold, yet 7 times what float32 rounding can do to these outputs (the
    envelope allows rel_l2 6.5e-7). The layer is flagged, and bias-missing explains it."""
    model = keras.Sequential(
        [
            keras.Input((8,), name="x"),
            keras.layers.Dense(8, activation="relu", name="d1"),
            keras.layers.Dense(4, name="big"),
            keras.layers.Dense(2, name="out"),
        ]
    )
    rng = np.random.default_rng(3)
    d1, big, out = (model.get_layer(name) for name in ("d1", "big", "out"))
    d1.set_weights([rng.normal(0.0, 100.0, (8, 8)), rng.normal(0.0, 10.0, 8)])
    big.set_weights([rng.normal(0.0, 5.0, (8, 4)), 0.01 * rng.choice([-1.0, 1.0], 4)])
    out.set_weights([rng.normal(0.0, 1.0, (4, 2)), rng.normal(0.0, 1.0, 2)])
    case = prepared(model, save_model(model), runner_pool)
    candidate = keras_pass(tf, case, "big", reweighted(only("bias", lambda tf, b: 0 * b)))
    found = diagnose(case, candidate)["big"]
    assert found.local_rel_l2 < DEFAULT_THRESHOLDS.rounding
    assert found.local_rel_l2 > 3 * found.local_bound
    assert found.local_verdict == "reduced-precision"
    assert found.explained_by == "bias-missing" and found.diagnosis[0].explains


@pytest.mark.parametrize("corrupt", ["layout", "noise"])
def test_screening_a_hypothesis_on_one_sample_keeps_what_explains(
    corrupt: str, tf: Any, built: Callable[[str], Built], monkeypatch: pytest.MonkeyPatch
) -> None:
    """conv-kernel-layout's layouts are first tried on one sample; only those that may
    still explain the layer, and the one closest there, are computed on every sample. A
    layout that explains is found as computing every layout on every sample finds it.
    Where none explains (noise), every other cause is diagnosed as unscreened, and the
    layout reported is the one diagnosing the first sample alone finds closest, measured
    on every sample: never closer than the closest of all of them."""
    model = built("conv-same")
    [layout] = [c for c in CAUSES if c.id == "conv-kernel-layout-hwio-read-as-oihw"]
    rng = np.random.default_rng(12)

    def noisy(tf: Any, keras_layer: Any, x: Any) -> Any:
        y = np.asarray(keras_layer(x))
        return y + 0.2 * np.sqrt(np.mean(y**2)) * rng.normal(size=y.shape)

    candidate = keras_pass(tf, model, "c2", layout.corrupt if corrupt == "layout" else noisy)
    screened = diagnose(model, candidate)["c2"].diagnosis
    first = diagnose_outputs(
        model.graph, candidate, model.fed, mode="accumulated", budget=Budget(60), samples=1
    )["c2"].diagnosis
    unscreened = tuple(dataclasses.replace(h, screened=False) for h in diagnose_module.HYPOTHESES)
    monkeypatch.setattr(diagnose_module, "HYPOTHESES", unscreened)
    every = diagnose(model, candidate)["c2"].diagnosis
    assert screened is not None and first is not None and every is not None
    if corrupt == "layout":
        assert screened == every
        assert screened[0].hypothesis == "conv-kernel-layout" and screened[0].explains
        return

    def others(found: tuple[Explanation, ...]) -> tuple[Explanation, ...]:
        return tuple(e for e in found if e.hypothesis != "conv-kernel-layout")

    assert others(screened) == others(every)
    [reported], [closest_first], [closest_all] = (
        [e for e in found if e.hypothesis == "conv-kernel-layout"]
        for found in (screened, first, every)
    )
    assert not reported.explains and not closest_all.explains
    assert reported.variant == closest_first.variant
    assert reported.rel_l2 >= closest_all.rel_l2
