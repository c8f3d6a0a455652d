"""The HTTP API against a live uvicorn server, on SQLite and on PostgreSQL."""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app.data.quantile_sketch import ALPHA
from app.service_process import LiveServer
from driftbench.client import Client, ServiceError
from tests.app.api.conftest import UPLOAD_LIMIT
from tests.support import dense_stack, hold, randomize_weights, release, wait_until_held

CPU_BACKENDS = ["numpy", "keras-cpu"]


def test_upload_returns_layers_and_backend_support(client: Client, example: Any) -> None:
    response = client.post_model(example("cifar_cnn").path, name="cifar", tags="conv, demo")
    assert response.status_code == 201, response.text
    model = response.json()
    assert model["name"] == "cifar" and model["tags"] == ["conv", "demo"]
    assert model["sha256"] == example("cifar_cnn").sha256
    layers = [layer for layer in model["layers"] if layer["class_name"] != "InputLayer"]
    assert [layer["class_name"] for layer in layers][:3] == ["Conv2D", "Conv2D", "MaxPooling2D"]
    assert layers[0]["params"] == 3 * 3 * 3 * 32 + 32
    assert layers[0]["output_shape"] == [None, 32, 32, 32]
    assert set(model["backend_support"]) >= {"keras-cpu", "numpy", "numpy-f64", "tfjs-cpu"}
    assert all(reason is None for reason in model["backend_support"].values())
    again = client.post_model(example("cifar_cnn").path, name="other name")
    assert again.status_code == 200 and again.json()["id"] == model["id"]
    listed = client.get("/api/models").json()
    assert model["id"] in [m["id"] for m in listed["data"]] and listed["count"] >= 1


def test_bad_uploads_are_refused_with_the_reason(
    client: Client, keras: Any, tmp_path: Path
) -> None:
    text = tmp_path / "notes.keras"
    text.write_text("not a model")
    response = client.post_model(text)
    assert response.status_code == 415 and "not a Keras model" in response.json()["detail"]
    inp = keras.Input((3,))
    lambda_path = tmp_path / "lambda.keras"
    keras.Model(inp, keras.layers.Lambda(lambda t: t * 3, name="triple")(inp)).save(lambda_path)
    response = client.post_model(lambda_path)
    assert response.status_code == 422 and "layer 'triple' is a Lambda layer" in response.text
    big = tmp_path / "big.keras"
    big.write_bytes(b"PK\x03\x04" + bytes(UPLOAD_LIMIT + 1024))
    response = client.post_model(big)
    assert response.status_code == 413 and str(UPLOAD_LIMIT) in response.json()["detail"]
    assert client.get("/api/models/999999").status_code == 404


def test_a_body_declared_far_over_the_limit_is_refused_before_it_is_read(
    client: Client,
) -> None:
    """A Content-Length beyond the upload limit (and the multipart framing's slack) is
    answered 413 by the middleware in front of every route, naming the limit, whatever
    the route would have done with the body."""
    for path in ("/api/models", "/api/runs", "/api/nowhere"):
        response = client.post(
            path, content=bytes(UPLOAD_LIMIT + 128 * 1024), headers={"Content-Type": "text/plain"}
        )
        assert response.status_code == 413, path
        detail = response.json()["detail"]
        assert f"{UPLOAD_LIMIT + 128 * 1024} bytes" in detail
        assert "DRIFTBENCH_MAX_UPLOAD_BYTES" in detail
    assert client.get("/api/models/999999").status_code == 404  # the server still answers


def test_layer_tfjs_lacks_is_named_in_backend_support(
    client: Client, keras: Any, tmp_path: Path
) -> None:
    inp = keras.Input((4,), name="x")
    path = tmp_path / "subtract.keras"
    keras.Model(inp, keras.layers.Subtract(name="minus")([inp, keras.layers.Dense(4)(inp)])).save(
        path
    )
    support = client.upload_model(path)["backend_support"]
    assert (
        support["tfjs-cpu"] == "unsupported: minus (Subtract) (tfjs-layers 4.22 has no such layer)"
    )
    assert support["numpy"] is None and support["keras-cpu"] is None


def test_inputs_generated_or_uploaded_and_checked(
    client: Client, example: Any, tmp_path: Path
) -> None:
    model_id = client.upload_model(example("regression").path)["id"]
    generated = client.post(
        f"/api/models/{model_id}/inputs", json={"kind": "normal", "batch": 5, "seed": 3, "std": 2.0}
    )
    assert generated.status_code == 201, generated.text
    assert generated.json()["shapes"] == {"input": [5, 4]}
    good = io.BytesIO()
    np.save(good, np.ones((2, 4), dtype=np.float32))
    uploaded = client.post(
        f"/api/models/{model_id}/inputs", files={"file": ("x.npy", good.getvalue())}
    )
    assert uploaded.status_code == 201 and uploaded.json()["kind"] == "npy"
    wrong = io.BytesIO()
    np.save(wrong, np.ones((2, 7), dtype=np.float32))
    response = client.post(
        f"/api/models/{model_id}/inputs", files={"file": ("x.npy", wrong.getvalue())}
    )
    assert response.status_code == 422
    assert "(2, 7) does not fit the model's input shape (batch, 4)" in response.json()["detail"]
    bad_kind = client.post(f"/api/models/{model_id}/inputs", json={"kind": "zeros"})
    assert bad_kind.status_code == 422
    assert client.post("/api/models/424242/inputs", json={"kind": "ones"}).status_code == 404


def test_run_results_divergence_csv_and_outputs(client: Client, example: Any) -> None:
    artifact = example("regression")
    model_id = client.upload_model(artifact.path)["id"]
    inputs = client.add_inputs(model_id, kind="uniform", batch=6, seed=9)
    with pytest.raises(ServiceError, match="valid backends: keras-cpu") as bad:
        client.start_run(model_id=model_id, input_set_id=inputs["id"], backends=["numpy", "tpu"])
    assert bad.value.status_code == 422
    with pytest.raises(ServiceError, match="compare_against 'tfjs-cpu' must be one of") as bad:
        client.start_run(
            model_id=model_id,
            input_set_id=inputs["id"],
            backends=["numpy"],
            compare_against=["tfjs-cpu"],
        )
    assert bad.value.status_code == 422
    created = client.post(
        "/api/runs",
        json={
            "model_id": model_id,
            "input_set_id": inputs["id"],
            "backends": CPU_BACKENDS,
            "modes": ["accumulated", "isolated"],
            "repeats": 2,
        },
    )
    assert created.status_code == 202, created.text
    run = client.wait_for_run(created.json()["id"])
    assert run["status"] == "done", run
    statuses = {b["backend"]: b for b in run["backend_runs"]}
    assert set(statuses) == {"numpy-f64", *CPU_BACKENDS}
    assert all(b["status"] == "done" for b in statuses.values())
    assert statuses["keras-cpu"]["environment"]["keras_backend"] == "tensorflow"
    assert statuses["numpy"]["deterministic"] is True

    divergence = client.divergence(run["id"])
    layers = ["dense_1", "dense_2", "dense_3"]
    assert [(r["backend"], r["layer"]) for r in divergence["rows"]] == [
        (backend, layer) for backend in sorted(CPU_BACKENDS) for layer in layers
    ]
    assert all(r["verdict"] in ("identical", "rounding") for r in divergence["rows"])
    assert divergence["drift_start"] == {"keras-cpu": None, "numpy": None}

    isolated = client.divergence(run["id"], mode="isolated", backend="numpy")
    assert {r["mode"] for r in isolated["rows"]} == {"isolated"} and len(isolated["rows"]) == 3

    # keras-cpu (the Python side) is compared with as part of the run, by default.
    assert run["compare_against"] == ["keras-cpu"]
    as_part_of_run = client.divergence(run["id"], against="keras-cpu")
    assert {r["backend"] for r in as_part_of_run["rows"]} == {"numpy", "numpy-f64"}
    isolated_part = client.divergence(run["id"], against="keras-cpu", mode="isolated")
    assert {r["backend"] for r in isolated_part["rows"]} == {"numpy", "numpy-f64"}
    # Each backend is compared as it arrives; its own error, diagnosed once, is the same
    # whatever it is compared with.
    local = {r["layer"]: r["local_rel_l2"] for r in divergence["rows"] if r["backend"] == "numpy"}
    assert None not in local.values()
    assert local == {
        r["layer"]: r["local_rel_l2"] for r in as_part_of_run["rows"] if r["backend"] == "numpy"
    }
    listed = client.get(f"/api/runs/{run['id']}/comparisons").json()["against"]
    assert listed == ["keras-cpu", "numpy-f64"]

    # Reads never compute: a comparison against another backend is asked for first.
    not_compared = client.get(f"/api/runs/{run['id']}/divergence", params={"against": "numpy"})
    assert not_compared.status_code == 409
    assert (
        f'POST /api/runs/{run["id"]}/comparisons {{"against": "numpy"}}'
        in not_compared.json()["detail"]
    )
    compared = client.post(f"/api/runs/{run['id']}/comparisons", json={"against": "numpy"})
    assert compared.status_code == 201, compared.text
    on_demand = client.divergence(run["id"], against="numpy")
    assert {r["backend"] for r in on_demand["rows"]} == {"keras-cpu", "numpy-f64"}
    by_numpy = {r["layer"]: r for r in on_demand["rows"] if r["backend"] == "numpy-f64"}
    by_reference = {r["layer"]: r for r in divergence["rows"] if r["backend"] == "numpy"}
    # The same pair of outputs seen from the other side: the same absolute errors.
    for layer, row in by_numpy.items():
        assert row["max_abs"] == by_reference[layer]["max_abs"]

    table = client.get(f"/api/runs/{run['id']}/divergence", params={"format": "csv"})
    assert table.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(table.text)))
    assert len(rows) == 6 and {"rel_l2", "max_ulp", "verdict", "sqnr_db"} <= set(rows[0])

    # The float64 reference's first layer, recomputed here from the uploaded weights.
    fetched = client.get(f"/api/runs/{run['id']}/outputs/numpy-f64/dense_1")
    assert fetched.status_code == 200
    output = np.load(io.BytesIO(fetched.content))
    weights = artifact.graph.layer("dense_1").weights
    stored_inputs = np.random.default_rng(9).uniform(-1, 1, (6, 4)).astype(np.float32)
    expected = np.maximum(
        stored_inputs.astype(np.float64) @ weights["kernel"].astype(np.float64) + weights["bias"], 0
    )
    assert output.shape == (6, 20)
    np.testing.assert_allclose(output, expected, rtol=1e-12, atol=1e-12)
    # The row's error histogram, as np.histogram bins the downloaded outputs' errors.
    numpy_output = np.load(
        io.BytesIO(client.get(f"/api/runs/{run['id']}/outputs/numpy/dense_1").content)
    )
    errors = numpy_output.astype(np.float64) - output
    row = next(r for r in divergence["rows"] if (r["backend"], r["layer"]) == ("numpy", "dense_1"))
    bound = np.abs(errors).max()
    counts, edges = np.histogram(
        errors, bins=len(row["histogram"]["counts"]), range=(-bound, bound)
    )
    assert row["histogram"] == {"edges": edges.tolist(), "counts": counts.tolist()}
    assert client.get(f"/api/runs/{run['id']}/outputs/numpy/nope").status_code == 404
    with pytest.raises(ServiceError, match="has no finished backend 'tfjs-cpu'") as missing:
        client.compare(run["id"], "tfjs-cpu")
    assert missing.value.status_code == 422


def test_model_drift_aggregates_over_runs(client: Client, example: Any) -> None:
    model_id = client.upload_model(example("autoencoder").path)["id"]
    per_run = []
    for seed in (1, 2):
        input_id = client.add_inputs(model_id, kind="uniform", batch=3, seed=seed)["id"]
        run = client.start_run(model_id=model_id, input_set_id=input_id, backends=["numpy"])
        assert client.wait_for_run(run["id"])["status"] == "done"
        rows = client.divergence(run["id"])["rows"]
        per_run.append({r["layer"]: r["max_abs"] for r in rows})
        drift = client.get(
            f"/api/models/{model_id}/drift", params={"backend": "numpy", "metric": "max_abs"}
        ).json()
        # answered again after each run: a kept answer never outlives a new run
        assert {row["count"] for row in drift["layers"]} == {len(per_run)}
    assert len(drift["layers"]) == 12
    for row in drift["layers"]:
        values = sorted(run[row["layer"]] for run in per_run)
        assert row["count"] == 2
        assert row["mean"] == pytest.approx(sum(values) / 2)
        assert row["max"] == pytest.approx(values[-1])
        assert row["median"] == pytest.approx(values[0], rel=ALPHA)


def test_depth_drift_over_three_dense_stacks(client: Client, keras: Any, tmp_path: Path) -> None:
    architectures = set()
    runs: list[list[dict[str, Any]]] = []
    for seed in (11, 12, 13):
        model = client.upload_model(dense_stack(keras, seed, tmp_path / f"stack{seed}.keras"))
        architectures.add(model["architecture"])
        input_id = client.add_inputs(model["id"], kind="normal", batch=4, seed=seed)["id"]
        run = client.start_run(model_id=model["id"], input_set_id=input_id, backends=["numpy"])
        assert client.wait_for_run(run["id"])["status"] == "done"
        runs.append(client.divergence(run["id"])["rows"])
    [architecture] = architectures
    depth = client.get(
        "/api/drift/depth", params={"architecture": architecture, "backend": "numpy"}
    ).json()
    assert depth["models"] == 3
    assert [row["depth"] for row in depth["depths"]] == list(range(1, 11))
    for row in depth["depths"]:
        values = [rows[row["depth"] - 1]["rel_l2"] for rows in runs]
        assert row["count"] == 3
        assert row["mean"] == pytest.approx(sum(values) / 3)
        assert row["max"] == pytest.approx(max(values))
        if row["depth"] > 1:
            ratios = [
                rows[row["depth"] - 1]["rel_l2"] / rows[row["depth"] - 2]["rel_l2"] for rows in runs
            ]
            assert row["growth"] == pytest.approx(sum(ratios) / 3)
        else:
            assert row["growth"] is None


def test_delete_model_removes_files_and_results(
    client: Client, server: LiveServer, keras: Any, tmp_path: Path
) -> None:
    model = client.upload_model(dense_stack(keras, 99, tmp_path / "doomed.keras"))
    input_id = client.add_inputs(model["id"], kind="ones")["id"]
    run_id = client.start_run(model_id=model["id"], input_set_id=input_id, backends=["numpy"])["id"]
    assert client.wait_for_run(run_id)["status"] == "done"
    depth = {"architecture": model["architecture"], "backend": "numpy"}
    models_before = client.get("/api/drift/depth", params=depth).json()["models"]
    model_file = server.data_dir / "models" / f"{model['sha256']}.keras"
    outputs = server.data_dir / "outputs" / str(run_id)
    assert model_file.exists() and outputs.exists()
    assert client.delete(f"/api/models/{model['id']}").status_code == 204
    assert client.get(f"/api/models/{model['id']}").status_code == 404
    assert client.get(f"/api/runs/{run_id}").status_code == 404
    assert not model_file.exists() and not outputs.exists()
    assert client.get("/api/drift/depth", params=depth).json()["models"] == models_before - 1
    assert client.delete(f"/api/models/{model['id']}").status_code == 404


def test_a_read_of_a_run_waits_for_its_end_when_asked(
    client: Client, gate_dir: Path, keras: Any, tmp_path: Path
) -> None:
    """`?wait_s=` answers once the run has ended, however long its jobs take, or with
    how it stands once the wait is over; one read sees the end."""
    model = client.upload_model(dense_stack(keras, 98, tmp_path / "waited.keras"))
    input_id = client.add_inputs(model["id"], kind="ones")["id"]
    hold(gate_dir, "numpy")
    try:
        run_id = client.start_run(model_id=model["id"], input_set_id=input_id, backends=["numpy"])[
            "id"
        ]
        wait_until_held(gate_dir, run_id, "numpy")
        asked = time.monotonic()
        held = client.get(f"/api/runs/{run_id}", params={"wait_s": 0.6})
        assert held.status_code == 200 and held.json()["status"] == "running"
        assert time.monotonic() - asked >= 0.6
    finally:
        release(gate_dir, "numpy")
    ended = client.get(f"/api/runs/{run_id}", params={"wait_s": 60})
    assert ended.status_code == 200 and ended.json()["status"] == "done"
    assert [b["status"] for b in ended.json()["backend_runs"]] == ["done", "done"]
    too_long = client.get(f"/api/runs/{run_id}", params={"wait_s": 61})
    assert too_long.status_code == 422 and "wait_s" in too_long.text
    assert client.get("/api/runs/999999", params={"wait_s": 5}).status_code == 404


def test_backends_report_availability_and_versions(client: Client) -> None:
    backends = {b["id"]: b for b in client.backends()}
    assert backends["keras-cpu"]["available"] is True
    assert backends["keras-cpu"]["versions"]["tensorflow"].startswith("2.")
    assert backends["tfjs-webgl"]["queue"] == "browser"
    assert backends["tfjs-webgl"]["versions"] == {"tfjs": "4.22.0"}
    tflite = backends["tflite-int8"]
    assert (tflite["queue"], tflite["precision"], tflite["by_default"]) == ("cpu", "int8", False)
    assert tflite["available"] is True
    assert tflite["versions"]["ai-edge-litert"] == __import__("ai_edge_litert").__version__
    assert (backends["keras-cpu"]["precision"], backends["keras-cpu"]["by_default"]) == (
        "float32",
        True,
    )


def test_token_ids_and_a_nested_model_over_http(client: Client, keras: Any, tmp_path: Path) -> None:
    """Integer inputs are generated and uploaded as integers (a float array for them is
    refused); a transfer-learning model's nested layers come back under their path."""
    from workers.engine.zoo import VOCABULARY, text_classifier

    path = tmp_path / "text.keras"
    text_classifier(keras).save(path)
    model = client.upload_model(path)
    [tokens] = [layer for layer in model["layers"] if layer["class_name"] == "InputLayer"]
    assert tokens["dtype"] == "int32"
    refused = client.post(f"/api/models/{model['id']}/inputs", json={"kind": "uniform"})
    assert refused.status_code == 422 and "takes integers" in refused.json()["detail"]
    floats = io.BytesIO()
    np.save(floats, np.full((2, 12), 3.5, dtype=np.float32))
    refused = client.post(
        f"/api/models/{model['id']}/inputs", files={"file": ("ids.npy", floats.getvalue())}
    )
    assert refused.status_code == 422 and "save it as an integer array" in refused.json()["detail"]
    ids = io.BytesIO()
    np.save(ids, np.random.default_rng(0).integers(0, VOCABULARY, (2, 12)))
    uploaded = client.post(
        f"/api/models/{model['id']}/inputs", files={"file": ("ids.npy", ids.getvalue())}
    )
    assert uploaded.status_code == 201, uploaded.text
    generated = client.add_inputs(model["id"], kind="randint", batch=3, low=0, high=VOCABULARY)
    for input_set in (uploaded.json(), generated):
        run = client.wait_for_run(
            client.start_run(
                model_id=model["id"], input_set_id=input_set["id"], backends=CPU_BACKENDS
            )["id"]
        )
        assert run["status"] == "done", run
        rows = client.divergence(run["id"])["rows"]
        assert {r["class_name"] for r in rows} == {"ops.NotEqual", "Embedding", "LSTM", "Dense"}
        assert all(r["verdict"] in ("identical", "rounding") for r in rows)

    L = keras.layers
    inner = keras.Sequential([keras.Input((4,)), L.Dense(3, name="d")], name="inner")
    x = keras.Input((4,), name="x")
    nested = keras.Model(x, L.Dense(2, name="head")(inner(x)))
    nested.save(tmp_path / "nested.keras")
    uploaded_nested = client.upload_model(tmp_path / "nested.keras")
    layers = uploaded_nested["layers"]
    assert [(layer["name"], layer["depth"]) for layer in layers] == [
        ("x", 0),
        ("inner/d", 1),
        ("head", 2),
    ]
    # The nested layer's output, named with its slash (by query: no path segment can).
    model_id = uploaded_nested["id"]
    x_values = np.random.default_rng(2).normal(size=(2, 4)).astype(np.float32)
    inputs = client.upload_inputs(model_id, x_values)
    run = client.wait_for_run(
        client.start_run(model_id=model_id, input_set_id=inputs["id"], backends=["numpy"])["id"]
    )
    stored = client.layer_output(run["id"], "numpy", "inner/d")
    expected = nested.get_layer("inner").get_layer("d")(x_values)
    np.testing.assert_allclose(stored, np.asarray(expected), rtol=1e-5, atol=1e-6)


def test_int8_backend_is_judged_by_its_reported_precision_over_http(
    client: Client, keras: Any, tmp_path: Path
) -> None:
    """A full-integer TFLite run through the service: its job records each layer's int8
    output scale, and the stored run's comparison judges each layer against it. The
    softmax head outputs 8 values, too few to read an 8-bit grid off: only the scale the
    backend reported shows them on int8's grid, so the diagnosis names int8-quantization
    there (float16's rounding, which fits too, otherwise)."""
    L = keras.layers
    model = keras.Sequential(
        [
            keras.Input((8,), name="x"),
            L.Dense(32, activation="relu", name="hidden"),
            L.Dense(4, activation="softmax", name="head"),
        ]
    )
    randomize_weights(model, seed=11)
    path = tmp_path / "head.keras"
    model.save(path)
    model_id = client.upload_model(path)["id"]
    inputs = client.add_inputs(model_id, kind="normal", batch=2, seed=4)
    run = client.wait_for_run(
        client.start_run(model_id=model_id, input_set_id=inputs["id"], backends=["tflite-int8"])[
            "id"
        ]
    )
    assert run["status"] == "done", run
    [int8] = [b for b in run["backend_runs"] if b["backend"] == "tflite-int8"]
    scales = int8["environment"]["quantization"]["layer_output_scales"]["accumulated"]
    assert set(scales) == {"hidden", "head"} and scales["head"][0] == pytest.approx(1 / 256)
    rows = {
        row["layer"]: row
        for row in client.get(f"/api/runs/{run['id']}/divergence").json()["rows"]
        if row["backend"] == "tflite-int8"
    }
    assert {row["verdict"] for row in rows.values()} == {"reduced-precision"}, rows
    assert all(row["local_rel_l2"] <= row["precision_bound"] for row in rows.values())
    assert rows["head"]["explained_by"] == "int8-quantization"


def test_python_client_for_notebooks(client: Client, keras: Any, example: Any) -> None:
    """`driftbench.client.Client` as a notebook uses it: own arrays in, plain records and
    numpy arrays out. The stored float64 output of the first layer is Keras's own, within
    float32 rounding; deleting the model takes its runs."""
    artifact = example("regression")
    model_id = client.upload_model(artifact.path)["id"]
    x = np.random.default_rng(5).normal(size=(3, 4)).astype(np.float32)
    inputs = client.upload_inputs(model_id, x)
    assert inputs["shapes"] == {"input": [3, 4]}
    named = client.upload_inputs(model_id, {"input": x[:2]})
    assert named["shapes"] == {"input": [2, 4]}
    run = client.start_run(model_id=model_id, input_set_id=inputs["id"], backends=["numpy"])
    assert client.wait_for_run(run["id"])["status"] == "done"
    rows = client.rows(run["id"])
    assert [(row["backend"], row["layer"]) for row in rows] == [
        ("numpy", name) for name in ("dense_1", "dense_2", "dense_3")
    ]
    assert all(isinstance(row["rel_l2"], float) for row in rows)
    stored = client.layer_output(run["id"], "numpy-f64", "dense_1")
    model = keras.saving.load_model(artifact.path)
    expected = np.asarray(model.get_layer("dense_1")(x), dtype=np.float64)
    assert stored.shape == (3, 20)
    np.testing.assert_allclose(stored, expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ServiceError) as missing:
        client.layer_output(run["id"], "numpy", "no_such_layer")
    assert missing.value.status_code == 404 and "no_such_layer" in str(missing.value.detail)
    client.delete_model(model_id)
    assert client.get(f"/api/runs/{run['id']}").status_code == 404
