"""The four TF.js backends in real headless Chromium (SwiftShader WebGL), one warm browser."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from tests.support import randomize_weights
from workers.backends.execution import run_backend, run_locally
from workers.backends.pool import RunnerPool
from workers.backends.registry import REGISTRY, BackendEntry
from workers.backends.tfjs.export import TFJS_ACTIVATIONS
from workers.backends.tfjs.runner import TfjsRunner
from workers.diagnosis.runs import run_diagnoser
from workers.engine.compare import compare
from workers.engine.inputs import InputRecipe, generate_inputs
from workers.engine.options import EngineOptions
from workers.engine.results import MODES, Mode

WITHIN_ROUNDING = {"identical", "rounding"}
FLOAT16_MAX = 65504.0
TFJS_FLOAT32 = ("tfjs-cpu", "tfjs-wasm", "tfjs-webgl")


def ones(artifact: Any) -> dict[str, np.ndarray]:
    return generate_inputs(InputRecipe("ones", batch=1), artifact.graph.input_shapes)


@pytest.fixture(scope="module")
def dense_run(example: Any, runner_pool: RunnerPool) -> tuple[Any, dict[str, Any]]:
    artifact = example("dense10x50")
    inputs = ones(artifact)
    results = run_locally(
        runner_pool,
        artifact,
        inputs,
        backends=["keras-cpu", *TFJS_FLOAT32, "tfjs-webgl-f16"],
        reference="numpy-f64",
        modes=MODES,
    )
    return artifact, results


def diagnosed(artifact: Any, results: dict[str, Any], inputs: dict[str, np.ndarray]) -> Any:
    """A diagnoser of the run, fed from numpy-f64 as the run's isolated mode was."""
    return run_diagnoser(
        artifact.graph, inputs, results, fed_from="numpy-f64", options=EngineOptions()
    )


def test_float32_tfjs_backends_stay_within_rounding(dense_run: Any) -> None:
    artifact, results = dense_run
    for backend in TFJS_FLOAT32:
        assert results[backend].status == "done", results[backend].reason
    backends = {b: results[b] for b in ("numpy-f64", "keras-cpu", *TFJS_FLOAT32)}
    diagnose = diagnosed(artifact, backends, ones(artifact))
    comparisons = compare(
        artifact.graph, backends, against="numpy-f64", modes=MODES, diagnose=diagnose
    )
    assert len(comparisons) == 2 * 4
    for comparison in comparisons:
        verdicts = [row.divergence.verdict for row in comparison.layers]
        assert len(verdicts) == 10
        if comparison.backend in TFJS_FLOAT32:
            assert set(verdicts) <= WITHIN_ROUNDING, (comparison.backend, comparison.mode, verdicts)
        # No false alarm: every layer's own error is within its rounding envelope.
        local = [row.local.local_verdict for row in comparison.layers if row.local]
        assert len(local) == 10 and set(local) <= WITHIN_ROUNDING, (comparison.backend, local)
        assert {row.explained_by for row in comparison.layers} == {None}


def test_against_keras_cpu_reports_differing_counts_and_mean_abs(dense_run: Any) -> None:
    artifact, results = dense_run
    comparisons = [
        c
        for c in compare(artifact.graph, results, against="keras-cpu")
        if c.backend in TFJS_FLOAT32
    ]
    assert {c.backend for c in comparisons} == set(TFJS_FLOAT32)
    for comparison in comparisons:
        for row in comparison.layers:
            candidate = results[comparison.backend].outputs["accumulated"][row.layer]
            reference = results["keras-cpu"].outputs["accumulated"][row.layer]
            assert row.divergence.n_diff == int(np.count_nonzero(candidate != reference))
            assert row.divergence.mean_abs == pytest.approx(
                float(np.mean(np.abs(candidate.astype(np.float64) - reference)))
            )


def test_float16_textures_are_reduced_precision_until_they_overflow(dense_run: Any) -> None:
    """...and explained by float16 activations: the outputs are float16 values (every
    tensor lives in a float16 texture), which float16 weights alone would not give."""
    artifact, results = dense_run
    pair = {"numpy-f64": results["numpy-f64"], "tfjs-webgl-f16": results["tfjs-webgl-f16"]}
    diagnose = diagnosed(artifact, pair, ones(artifact))
    f16 = compare(artifact.graph, pair, against="numpy-f64", diagnose=diagnose)[0]
    assert f16.drift_start is not None
    assert (f16.drift_start.layer, f16.drift_start.divergence.verdict) == (
        "dense_1",
        "reduced-precision",
    )
    reference = results["numpy-f64"].outputs["accumulated"]
    for row in f16.layers:
        overflows = float(np.max(np.abs(reference[row.layer]))) > FLOAT16_MAX
        assert row.divergence.verdict == ("nonfinite" if overflows else "reduced-precision")
    first_overflow = next(
        row.layer for row in f16.layers if np.max(np.abs(reference[row.layer])) > FLOAT16_MAX
    )
    for row in f16.layers:
        assert row.local is not None
        if comes_after(f16, row, first_overflow):
            # NaN in, NaN out: the layer itself adds nothing; its drift is inherited.
            assert (row.local.local_verdict, row.explained_by) == ("identical", None)
            continue
        assert row.explained_by == "float16-activations", (row.layer, row.local)
        tested = {e.hypothesis: e for e in row.local.diagnosis}
        if row.layer != first_overflow:
            assert not tested["float16-weights"].explains
            assert tested["float16-activations"].rel_l2 < tested["float16-weights"].rel_l2 / 10
    environment = results["tfjs-webgl-f16"].environment
    assert environment["flags"]["WEBGL_FORCE_F16_TEXTURES"] is True
    assert environment["weights_roundtrip"]["identical"] is False


def comes_after(comparison: Any, row: Any, first_overflow: str) -> bool:
    names = [r.layer for r in comparison.layers]
    return names.index(row.layer) > names.index(first_overflow)


def test_environment_records_backend_renderer_flags_and_weights(dense_run: Any) -> None:
    _, results = dense_run
    for backend in TFJS_FLOAT32:
        environment = results[backend].environment
        assert environment["tfjs"] == "4.22.0"
        assert environment["backend"] == backend.removeprefix("tfjs-")
        assert environment["weights_roundtrip"] == {
            "checked": 20,
            "identical": True,
            "differing": [],
        }
    webgl = results["tfjs-webgl"].environment
    assert "SwiftShader" in webgl["webgl_renderer"]
    assert webgl["flags"]["WEBGL_RENDER_FLOAT32_ENABLED"] is True
    assert webgl["flags"]["WEBGL_FORCE_F16_TEXTURES"] is False
    assert set(webgl["flags"]) >= {"WEBGL_PACK", "WEBGL_CPU_FORWARD"}
    wasm = results["tfjs-wasm"].environment
    assert isinstance(wasm["wasm_simd"], bool) and isinstance(wasm["wasm_threads"], bool)


def branchy_model(keras: Any) -> Any:
    """Many layer classes in one functional model, so one page load checks them all."""
    L = keras.layers
    inp = keras.Input((8, 8, 3), name="image")
    a = L.Conv2D(4, 3, padding="same", activation="relu", name="conv")(inp)
    a = L.BatchNormalization(name="bn")(a)
    b = L.DepthwiseConv2D(3, padding="same", name="depthwise")(inp)
    b = L.SeparableConv2D(4, 3, padding="same", activation="tanh", name="separable")(b)
    merged = L.Add(name="add")([a, b])
    merged = L.Concatenate(name="concat")([merged, L.Multiply(name="mul")([a, b])])
    x = L.MaxPooling2D(2, name="maxpool")(merged)
    x = L.Conv2DTranspose(3, 3, strides=2, padding="same", name="deconv")(x)
    x = L.ZeroPadding2D(1, name="pad")(x)
    x = L.Cropping2D(1, name="crop")(x)
    x = L.AveragePooling2D(2, name="avgpool")(x)
    x = L.UpSampling2D(2, name="upsample")(x)
    x = L.LayerNormalization(name="layernorm")(x)
    x = L.PReLU(name="prelu")(x)
    pooled = L.GlobalAveragePooling2D(name="gap")(x)
    maxed = L.GlobalMaxPooling2D(name="gmp")(x)
    x = L.Average(name="avg")([pooled, maxed])
    x = L.Dense(6, activation="gelu", name="dense")(x)
    x = L.Reshape((2, 3), name="reshape")(x)
    x = L.Permute((2, 1), name="permute")(x)
    x = L.Flatten(name="flatten")(x)
    x = L.ELU(name="elu")(x)
    return keras.Model(inp, L.Softmax(name="softmax")(x))


def test_branches_merges_and_layer_classes_on_tfjs_cpu(
    keras: Any, save_model: Any, runner_pool: RunnerPool
) -> None:
    model = branchy_model(keras)
    randomize_weights(model, seed=21)
    artifact = save_model(model)
    inputs = generate_inputs(InputRecipe("uniform", batch=2, seed=5), artifact.graph.input_shapes)
    results = run_locally(
        runner_pool, artifact, inputs, backends=["tfjs-cpu"], reference="numpy-f64", modes=MODES
    )
    assert results["tfjs-cpu"].status == "done", results["tfjs-cpu"].reason
    diagnose = diagnosed(artifact, results, inputs)
    comparisons = compare(
        artifact.graph, results, against="numpy-f64", modes=MODES, diagnose=diagnose
    )
    for comparison in comparisons:
        bad = [
            (row.layer, row.divergence.verdict)
            for row in comparison.layers
            if row.divergence.verdict not in WITHIN_ROUNDING
        ]
        assert not bad, (comparison.mode, bad)
        # No false alarm from the diagnosis either, on every layer class of the model.
        local = {row.layer: row.local for row in comparison.layers}
        assert all(d is not None for d in local.values()), comparison.mode
        alarms = {
            n: d.local_verdict for n, d in local.items() if d.local_verdict not in WITHIN_ROUNDING
        }
        assert not alarms, (comparison.mode, alarms)


def test_inputs_inline_and_fetched_give_the_same_bits(
    keras: Any, save_model: Any, runner_pool: RunnerPool, monkeypatch: Any
) -> None:
    """Small inputs travel in the job's spec, larger ones in the page's own request; a
    multi-input layer in isolated mode reads its tensors at their offsets either way."""
    from workers.backends.tfjs import runner

    model = branchy_model(keras)
    randomize_weights(model, seed=21)
    artifact = save_model(model)
    inputs = generate_inputs(InputRecipe("uniform", batch=2, seed=5), artifact.graph.input_shapes)

    def outputs() -> dict[str, Any]:
        results = run_locally(
            runner_pool,
            artifact,
            inputs,
            backends=["tfjs-cpu"],
            reference="numpy-f64",
            modes=MODES,
        )
        assert results["tfjs-cpu"].status == "done", results["tfjs-cpu"].reason
        return results["tfjs-cpu"].outputs

    inline = outputs()
    monkeypatch.setattr(runner, "INLINE_INPUT_BYTES", 0)
    fetched = outputs()
    for mode in MODES:
        assert inline[mode].keys() == fetched[mode].keys()
        for layer, values in inline[mode].items():
            assert np.array_equal(values, fetched[mode][layer], equal_nan=True), (mode, layer)


def test_bilinear_upsampling_without_half_pixel_centres_is_flagged(
    keras: Any, save_model: Any, runner_pool: RunnerPool
) -> None:
    """TF.js resizes with the legacy pixel grid, Keras 3 with half-pixel centres."""
    L = keras.layers
    model = keras.Sequential(
        [
            keras.Input((3, 4, 2)),
            L.Dense(2, name="mix"),
            L.UpSampling2D(2, interpolation="bilinear", name="up"),
            L.Dense(2, name="after"),
        ]
    )
    randomize_weights(model, seed=4)
    artifact = save_model(model)
    inputs = generate_inputs(InputRecipe("uniform", batch=2, seed=1), artifact.graph.input_shapes)
    results = run_locally(
        runner_pool, artifact, inputs, backends=["tfjs-cpu"], reference="numpy-f64", modes=MODES
    )
    diagnose = diagnosed(artifact, results, inputs)
    for mode in MODES:
        [comparison] = compare(
            artifact.graph, results, against="numpy-f64", modes=(mode,), diagnose=diagnose
        )
        # Accumulated too: "after" is recomputed from TF.js's own "up", so it is fine.
        assert [row.explained_by for row in comparison.layers] == [
            None,
            "upsampling-pixel-grid",
            None,
        ]
        assert comparison.layers[1].local.diagnosis[0].variant == "legacy grid"
    isolated = compare(artifact.graph, results, against="numpy-f64", modes=("isolated",))[0]
    assert [row.divergence.verdict for row in isolated.layers][1] == "mismatch"
    assert {isolated.layers[0].divergence.verdict, isolated.layers[2].divergence.verdict} <= (
        WITHIN_ROUNDING
    )


def test_activations_and_the_hard_sigmoid_slope(
    keras: Any, save_model: Any, runner_pool: RunnerPool
) -> None:
    """TF.js still computes hard_sigmoid as Keras 2 did (0.2x + 0.5), Keras 3 as x/6 + 0.5."""
    inp = keras.Input((8,), name="x")
    names = list(TFJS_ACTIVATIONS)
    model = keras.Model(inp, [keras.layers.Activation(n, name=f"act_{n}")(inp) for n in names])
    artifact = save_model(model)
    inputs = generate_inputs(
        InputRecipe("uniform", batch=4, seed=8, low=-4, high=4), artifact.graph.input_shapes
    )
    results = run_locally(
        runner_pool, artifact, inputs, backends=["tfjs-cpu"], reference="numpy-f64"
    )
    diagnose = diagnosed(artifact, results, inputs)
    [comparison] = compare(artifact.graph, results, against="numpy-f64", diagnose=diagnose)
    verdicts = {row.layer: row.divergence.verdict for row in comparison.layers}
    assert verdicts.pop("act_hard_sigmoid") == "mismatch"
    assert set(verdicts.values()) <= WITHIN_ROUNDING, verdicts
    explained = {row.layer: row.explained_by for row in comparison.layers if row.explained_by}
    assert explained == {"act_hard_sigmoid": "hard-sigmoid-keras2"}


def test_unsupported_layer_stops_only_the_tfjs_backends(
    keras: Any, save_model: Any, runner_pool: RunnerPool
) -> None:
    inp = keras.Input((4,))
    model = keras.Model(inp, keras.layers.Subtract(name="minus")([inp, keras.layers.Dense(4)(inp)]))
    artifact = save_model(model)
    inputs = generate_inputs(InputRecipe("ones", batch=1), artifact.graph.input_shapes)
    results = run_locally(
        runner_pool, artifact, inputs, backends=["tfjs-wasm", "numpy"], reference="numpy-f64"
    )
    assert results["tfjs-wasm"].status == "unsupported"
    assert results["tfjs-wasm"].reason == (
        "unsupported: minus (Subtract) (tfjs-layers 4.22 has no such layer)"
    )
    assert results["numpy"].status == "done"


class TfjsWebgpuRunner(TfjsRunner):
    """A backend our TF.js bundle does not contain: it must fail, never fall back."""

    BACKEND: ClassVar[str] = "tfjs-webgpu-test"
    TFJS_BACKEND: ClassVar[str] = "webgpu"


def test_outputs_the_server_refuses_fail_the_job_with_the_status(
    example: Any, monkeypatch: pytest.MonkeyPatch, runner_pool: RunnerPool
) -> None:
    """The page's POST of the outputs is answered 413 above the server's limit: the job
    fails naming it rather than returning without outputs."""
    from workers.backends.tfjs import harness_server

    artifact = example("regression")
    inputs = generate_inputs(InputRecipe("ones"), artifact.graph.input_shapes)
    monkeypatch.setattr(harness_server, "MAX_OUTPUT_BYTES", 4)
    result = run_backend(
        runner_pool, "tfjs-cpu", artifact, inputs, modes=(), repeats=1, reference_feed=None
    )
    assert result.status == "failed"
    assert "/outputs: HTTP 413" in result.reason
    assert result.outputs == {}


def test_a_backend_that_does_not_activate_fails_with_the_reason(
    example: Any, monkeypatch: pytest.MonkeyPatch, runner_pool: RunnerPool
) -> None:
    entry = BackendEntry(TfjsWebgpuRunner.BACKEND, f"{__name__}:TfjsWebgpuRunner", "browser")
    monkeypatch.setitem(REGISTRY, entry.id, entry)
    artifact = example("regression")
    inputs = generate_inputs(InputRecipe("ones"), artifact.graph.input_shapes)
    result = run_backend(
        runner_pool,
        TfjsWebgpuRunner.BACKEND,
        artifact,
        inputs,
        modes=(),
        repeats=1,
        reference_feed=None,
    )
    assert result.status == "failed"
    assert "TF.js backend 'webgpu' failed to start" in result.reason
    assert "not found in registry" in result.reason
    assert result.outputs == {}


def test_missing_chromium_skips_tfjs_with_the_install_hint(
    example: Any, tmp_path: Path, engine_options: EngineOptions
) -> None:
    artifact = example("regression")
    inputs = generate_inputs(InputRecipe("ones"), artifact.graph.input_shapes)
    options = replace(engine_options, chromium_path=tmp_path / "no-chromium")
    with RunnerPool(options) as pool:
        results = run_locally(
            pool, artifact, inputs, backends=["tfjs-webgl", "keras-cpu"], reference="numpy-f64"
        )
    assert results["tfjs-webgl"].status == "skipped"
    assert "Chromium not found" in results["tfjs-webgl"].reason
    assert "apt-get install -y chromium" in results["tfjs-webgl"].reason
    assert results["keras-cpu"].status == "done"


@pytest.mark.parametrize("backend", [*TFJS_FLOAT32, "tfjs-webgl-f16"])
def test_a_warm_page_gives_the_numbers_of_a_fresh_one(
    backend: str, example: Any, monkeypatch: Any, runner_pool: RunnerPool
) -> None:
    from workers.backends.tfjs import browser_host

    monkeypatch.setattr(browser_host, "PAGE_JOBS", 2)
    artifact = example("conv3x3")
    inputs = generate_inputs(InputRecipe("uniform", batch=2, seed=5), artifact.graph.input_shapes)
    results = [
        run_backend(
            runner_pool, backend, artifact, inputs, modes=(), repeats=1, reference_feed=None
        )
        for _ in range(3)
    ]
    page_jobs = [result.environment["page_job"] for result in results]
    assert 1 in page_jobs and 2 in page_jobs, page_jobs  # fresh and warm pages both ran
    # a warm page keeps the loaded model: it served the second job of each page
    kept = [result.environment["model_kept"] for result in results]
    assert kept == [job > 1 for job in page_jobs], (page_jobs, kept)
    first = results[0].outputs["accumulated"]
    for result in results[1:]:
        for layer, values in result.outputs["accumulated"].items():
            assert np.array_equal(values, first[layer], equal_nan=True), (backend, layer)


def run_all_done(
    pool: RunnerPool,
    artifact: Any,
    inputs: dict[str, np.ndarray],
    backends: list[str],
    modes: tuple[Mode, ...],
) -> dict[str, Any]:
    """Every backend's results against numpy-f64, each of which must have run."""
    results = run_locally(
        pool, artifact, inputs, backends=backends, reference="numpy-f64", modes=modes
    )
    assert {b: r.status for b, r in results.items()} == dict.fromkeys(
        ["numpy-f64", *backends], "done"
    )
    return results


def test_preprocessing_layers_run_in_the_browser_within_rounding(
    keras: Any, save_model: Any, runner_pool: RunnerPool
) -> None:
    """Rescaling as it is; Normalization (which TF.js lacks) exported as the BatchNormalization
    computing the same, one variance 0 so Keras's 1e-7 floor on the divisor counts;
    keras-cpu is the second opinion beside our float64 port."""
    L = keras.layers
    inp = keras.Input((4, 4, 3))
    x = L.Rescaling(1 / 255, offset=-0.5, name="scale")(inp)
    x = L.Normalization(mean=[0.5, -1.0, 2.0], variance=[4.0, 0.25, 0.0], name="given")(x)
    x = L.Normalization(axis=-1, name="adapted")(x)
    model = keras.Model(inp, L.Dense(2, name="head")(x))
    randomize_weights(model, seed=15)
    artifact = save_model(model)
    inputs = generate_inputs(
        InputRecipe("uniform", batch=2, seed=3, low=0.0, high=255.0), artifact.graph.input_shapes
    )
    backends = ["keras-cpu", "tfjs-cpu", "tfjs-wasm"]
    results = run_all_done(runner_pool, artifact, inputs, backends, ("accumulated",))
    for comparison in compare(artifact.graph, results, against="numpy-f64"):
        verdicts = {row.layer: row.divergence.verdict for row in comparison.layers}
        assert set(verdicts.values()) <= WITHIN_ROUNDING, (comparison.backend, verdicts)


def test_recurrent_layers_run_in_the_browser_within_rounding(
    keras: Any, save_model: Any, runner_pool: RunnerPool
) -> None:
    """LSTM, GRU (TF.js has only reset_after=False), SimpleRNN walking backwards and
    Bidirectional (concat and sum), in both modes on every float32 TF.js backend, with
    keras-cpu as the second opinion beside our float64 port."""
    L = keras.layers
    inp = keras.Input((6, 3))
    x = L.LSTM(5, return_sequences=True, name="lstm")(inp)
    x = L.Bidirectional(L.LSTM(4, return_sequences=True), name="both_ways")(x)
    x = L.GRU(4, reset_after=False, return_sequences=True, name="gru")(x)
    x = L.Bidirectional(L.GRU(3, reset_after=False), merge_mode="sum", name="summed")(
        L.SimpleRNN(3, go_backwards=True, return_sequences=True, name="backwards")(x)
    )
    model = keras.Model(inp, L.Dense(2, name="head")(x))
    randomize_weights(model, seed=21)
    artifact = save_model(model)
    inputs = generate_inputs(InputRecipe("uniform", batch=2, seed=5), artifact.graph.input_shapes)
    backends = ["keras-cpu", *TFJS_FLOAT32]
    results = run_locally(
        runner_pool, artifact, inputs, backends=backends, reference="numpy-f64", modes=MODES
    )
    statuses = {backend: result.status for backend, result in results.items()}
    assert statuses == dict.fromkeys(["numpy-f64", *backends], "done"), results
    comparisons = compare(artifact.graph, results, against="numpy-f64", modes=MODES)
    assert {(c.backend, c.mode) for c in comparisons} == {(b, m) for b in backends for m in MODES}
    for comparison in comparisons:
        verdicts = {row.layer: row.divergence.verdict for row in comparison.layers}
        assert set(verdicts.values()) <= WITHIN_ROUNDING, (comparison.backend, verdicts)


def test_volumetric_and_sequence_layers_run_in_the_browser_within_rounding(
    keras: Any, save_model: Any, runner_pool: RunnerPool
) -> None:
    """Conv3D, 3D pooling, Conv3DTranspose, RepeatVector, TimeDistributed, Dot and a
    thresholded ReLU (exported as TF.js's ThresholdedReLU), with keras-cpu beside."""
    L = keras.layers
    x = keras.Input((4, 4, 4, 2), name="x")
    c = L.Conv3D(3, 2, padding="same", name="conv3d")(x)
    p = L.MaxPooling3D(2, name="max3d")(c)
    t = L.Conv3DTranspose(2, 2, strides=2, name="convt3d")(p)
    a = L.AveragePooling3D(2, name="avg3d")(t)
    r = L.RepeatVector(3, name="repeat")(L.Flatten(name="flat")(a))
    td = L.TimeDistributed(L.Dense(4, name="inner"), name="td")(r)
    d = L.Dot(axes=(2, 2), name="dot")([td, td])
    model = keras.Model(x, L.ReLU(threshold=0.1, name="thr")(d))
    randomize_weights(model, seed=16)
    artifact = save_model(model)
    inputs = generate_inputs(InputRecipe("uniform", batch=2, seed=0), artifact.graph.input_shapes)
    backends = ["keras-cpu", "tfjs-cpu"]
    results = run_all_done(runner_pool, artifact, inputs, backends, MODES)
    assert results["tfjs-cpu"].environment["weights_roundtrip"]["identical"] is True
    for comparison in compare(artifact.graph, results, against="numpy-f64", modes=MODES):
        verdicts = {row.layer: row.divergence.verdict for row in comparison.layers}
        assert len(verdicts) == 9
        assert set(verdicts.values()) <= WITHIN_ROUNDING, (comparison.backend, verdicts)


def test_layers_exported_as_other_tfjs_layers_match_in_both_modes(
    keras: Any, save_model: Any, runner_pool: RunnerPool
) -> None:
    """The rewrites for what TF.js lacks (a one-group-per-channel Conv2D as a depthwise
    one, LayerScale as a BatchNormalization, hard-swish as four layers, keepdims pooling
    as pooling and Reshape, `x * c + b` as Rescaling), in isolated mode too, where the
    page applies a node's chain of TF.js layers to the reference's inputs."""
    from keras.src.applications.convnext import LayerScale

    L = keras.layers
    x = keras.Input((5, 5, 4), name="x")
    grouped = L.Conv2D(8, 3, groups=4, padding="same", name="grouped")(x)
    scaled = LayerScale(0.5, 8, name="scale")(grouped)
    swished = L.Activation("hard_silu", name="swish")(scaled * 2.0 - 1.0)
    pooled = L.GlobalAveragePooling2D(keepdims=True, name="squeeze")(swished)
    model = keras.Model(x, L.Multiply(name="excite")([swished, pooled]))
    randomize_weights(model, seed=17)
    artifact = save_model(model)
    assert any(layer.class_name == "ops.Subtract" for layer in artifact.graph.compute_layers)
    inputs = generate_inputs(InputRecipe("uniform", batch=2, seed=1), artifact.graph.input_shapes)
    backends = ["keras-cpu", "tfjs-cpu"]
    results = run_all_done(runner_pool, artifact, inputs, backends, MODES)
    comparisons = compare(artifact.graph, results, against="numpy-f64", modes=MODES)
    assert {(c.backend, c.mode) for c in comparisons} == {(b, m) for b in backends for m in MODES}
    for comparison in comparisons:
        verdicts = {row.layer: row.divergence.verdict for row in comparison.layers}
        assert len(verdicts) == len(artifact.graph.compute_layers)
        assert set(verdicts.values()) <= WITHIN_ROUNDING, (comparison.mode, verdicts)


def test_masked_sequences_run_in_the_browser_as_keras_masks_them(
    keras: Any, save_model: Any, runner_pool: RunnerPool
) -> None:
    """Embedding(mask_zero) and Masking masks reach LSTM, Bidirectional, SimpleRNN and GRU
    in TF.js as in Keras, in both modes; the mask nodes themselves are not provided by
    TF.js. TF.js's GlobalAveragePooling1D ignores the mask Keras averages with: that shows
    as a mismatch at that layer, not hidden."""
    L = keras.layers
    tokens = keras.Input((6,), dtype="int32", name="tokens")
    steps = keras.Input((6, 3), name="steps")
    read = L.LSTM(4, return_sequences=True, name="read")(
        L.Embedding(4, 3, mask_zero=True, name="embed")(tokens)
    )
    both = L.Bidirectional(L.GRU(3, reset_after=False), name="both_ways")(read)
    walked = L.SimpleRNN(4, return_sequences=True, name="walk")(L.Masking(0.0, name="mask")(steps))
    summary = L.GRU(3, reset_after=False, name="summary")(walked)
    head = L.Dense(2, name="head")(L.Concatenate(name="joined")([both, summary]))
    average = L.GlobalAveragePooling1D(name="average")(read)
    model = keras.Model([tokens, steps], [head, average])
    randomize_weights(model, seed=23)
    artifact = save_model(model)
    inputs = {
        "tokens": np.array([[1, 0, 2, 3, 0, 0], [0, 0, 3, 1, 2, 1]], dtype=np.int32),
        "steps": np.random.default_rng(4).normal(size=(2, 6, 3)).astype(np.float32),
    }
    inputs["steps"][0, [1, 4]] = 0.0
    inputs["steps"][1, 3:] = 0.0
    masks = {n.name for n in artifact.graph.compute_layers if n.class_name.startswith("ops.")}
    assert len(masks) == 3
    results = run_all_done(runner_pool, artifact, inputs, ["keras-cpu", "tfjs-cpu"], MODES)
    comparisons = compare(artifact.graph, results, against="numpy-f64", modes=MODES)
    assert {(c.backend, c.mode) for c in comparisons} == {
        (b, m) for b in ("keras-cpu", "tfjs-cpu") for m in MODES
    }
    for comparison in comparisons:
        verdicts = {row.layer: row.divergence.verdict for row in comparison.layers}
        tfjs = comparison.backend == "tfjs-cpu"
        assert set(comparison.not_provided) == (masks if tfjs else set())
        assert set(verdicts) == {n.name for n in artifact.graph.compute_layers} - set(
            comparison.not_provided
        )
        mismatched = {layer for layer, verdict in verdicts.items() if verdict == "mismatch"}
        assert mismatched == ({"average"} if tfjs else set()), (comparison.mode, verdicts)
        assert set(verdicts.values()) - {"mismatch"} <= WITHIN_ROUNDING, verdicts


def test_models_beyond_the_kept_ones_are_loaded_again_with_the_same_numbers(
    example: Any, runner_pool: RunnerPool
) -> None:
    """The page keeps two loaded models: a third evicts the least recently used, which
    its next job loads again; kept or reloaded, a model gives the same numbers."""

    def job(name: str) -> Any:
        artifact = example(name)
        inputs = generate_inputs(
            InputRecipe("uniform", batch=2, seed=3), artifact.graph.input_shapes
        )
        result = run_backend(
            runner_pool, "tfjs-cpu", artifact, inputs, modes=(), repeats=1, reference_feed=None
        )
        assert result.status == "done", result.reason
        return result

    first = job("regression")
    again = job("regression")
    job("dense10x50")
    job("conv3x3")
    reloaded = job("regression")
    if again.environment["page_job"] > first.environment["page_job"]:
        assert again.environment["model_kept"] is True
    assert reloaded.environment["model_kept"] is False
    for result in (again, reloaded):
        for layer, values in result.outputs["accumulated"].items():
            assert np.array_equal(values, first.outputs["accumulated"][layer]), layer


def test_a_page_keeps_the_last_input_sets_and_never_answers_with_the_wrong_ones(
    example: Any, runner_pool: RunnerPool
) -> None:
    """Inputs the page already holds are not sent again; a third set evicts the oldest;
    and a page that lost a set its runner believes kept fetches it, so the numbers are
    always those of the job's own inputs (Keras, an independent implementation)."""
    artifact = example("dense10x50")
    runner = runner_pool.runner("tfjs-cpu")
    keras_cpu = runner_pool.runner("keras-cpu")
    sets = [
        generate_inputs(InputRecipe("uniform", batch=3, seed=seed), artifact.graph.input_shapes)
        for seed in (11, 12, 13)
    ]
    expected = [keras_cpu.run(artifact, inputs) for inputs in sets]

    def job(index: int) -> bool:
        outputs = runner.run(artifact, sets[index])
        for layer, values in outputs.items():
            want = expected[index][layer]  # float32 rounding apart; other inputs: O(1)
            np.testing.assert_allclose(values, want, atol=1e-5 * np.abs(want).max(), err_msg=layer)
        return bool(runner.environment()["inputs_kept"])

    page_jobs = []

    def kept(index: int) -> bool:
        result = job(index)
        page_jobs.append(runner.environment()["page_job"])
        return result

    sequence = [kept(0), kept(0), kept(1), kept(0), kept(2), kept(1), kept(0)]
    if page_jobs == list(range(page_jobs[0], page_jobs[0] + len(page_jobs))):  # one page
        # 0 new, 0 kept, 1 new, 0 kept, 2 new (evicts 1), 1 new (evicts 0), 0 new.
        assert sequence == [False, True, False, True, False, False, False]

    async def forget(page: Any, _: int) -> None:
        await page.evaluate("() => keptInputs.clear()")

    harness = f"{runner.session.server.url}/harness.html"
    runner.host.run_in_page(runner.BACKEND, harness, forget, timeout_s=30)
    assert job(0) is False  # the runner thought set 0 kept; the page fetched it


def test_input_sets_over_the_kept_size_are_sent_each_job(
    example: Any, runner_pool: RunnerPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A page holds no set bigger than KEPT_INPUT_BYTES between jobs (a big model's
    isolated inputs would stay in the browser's memory): such a job sends them again."""
    import workers.backends.tfjs.runner as tfjs_runner_module

    artifact = example("dense10x50")
    inputs = generate_inputs(InputRecipe("uniform", batch=3, seed=21), artifact.graph.input_shapes)
    runner = runner_pool.runner("tfjs-cpu")
    size = sum(array.nbytes for array in inputs.values())
    monkeypatch.setattr(tfjs_runner_module, "KEPT_INPUT_BYTES", size - 1)
    first = runner.run(artifact, inputs)
    again = runner.run(artifact, inputs)
    assert runner.environment()["inputs_kept"] is False
    for layer, values in again.items():
        assert np.array_equal(values, first[layer]), layer
    monkeypatch.undo()
    for _ in range(2):
        runner.run(artifact, inputs)
    assert runner.environment()["inputs_kept"] is True  # the same set, at the usual cap
