"""Your own port over HTTP: a hand-written numpy port built from the /weights download
alone, its outputs uploaded as ext:<name> and compared like any backend; the classic
port bugs found at their layer; bad uploads refused with nothing lost; isolated mode
fed from /feeds."""

from __future__ import annotations

import io
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import numpy as np
import pytest

from app.service_process import LiveServer
from driftbench.client import Client
from tests.support import randomize_weights
from workers.backends.tfjs.browser_host import CHROMIUM_FLAGS
from workers.engine.options import EngineOptions

WITHIN_ROUNDING = {"identical", "rounding"}
# On PostgreSQL only: it enforces the width of the backend name columns that external
# names ('ext:probe/<device>/<backend>') need, which SQLite does not.
pytestmark = pytest.mark.parametrize("server", ["postgresql"], indirect=True)
Port = dict[str, Callable[[np.ndarray, dict[str, np.ndarray]], np.ndarray]]


@pytest.fixture(scope="module")
def finished_run(
    client: Client, keras: Any, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """A Conv2D + Dense model run on numpy-f64 (the reference) and keras-cpu."""
    L = keras.layers
    model = keras.Sequential(
        [
            keras.Input((6, 6, 3), name="image"),
            L.Conv2D(4, 3, padding="same", activation="relu", name="conv"),
            L.Flatten(name="flat"),
            L.Dense(5, activation="tanh", name="fc"),
            L.Dense(5, name="square"),
            L.Dense(3, name="out"),
        ]
    )
    randomize_weights(model, seed=31)
    path = tmp_path_factory.mktemp("port-model") / "port.keras"
    model.save(path)
    stored, body = client.prepare_run(path, ["keras-cpu"], batch=3)
    run = client.wait_for_run(client.start_run(**body)["id"])
    assert run["status"] == "done", run
    return {"model": stored, "run": run, "input_set_id": body["input_set_id"]}


def download_npz(client: Client, path: str, **params: Any) -> dict[str, np.ndarray]:
    response = client.get(path, params=params)
    assert response.status_code == 200, response.text
    with np.load(io.BytesIO(response.content), allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files}


def conv_same(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """A 'same' 3x3 convolution written the way people write it: pad, slide, multiply."""
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(1, 2))
    return np.einsum("bhwcij,ijco->bhwo", windows, kernel) + bias


def numpy_port(weights: dict[str, np.ndarray]) -> Port:
    """The float32 numpy port of the model, one function per layer, from the weights
    download alone (keys '<layer>/<weight>', Keras's layout)."""

    def dense(name: str, activation: Callable[[np.ndarray], np.ndarray] = lambda v: v) -> Any:
        return lambda x, w: activation(np.dot(x, w[f"{name}/kernel"]) + w[f"{name}/bias"])

    return {
        "conv": lambda x, w: np.maximum(conv_same(x, w["conv/kernel"], w["conv/bias"]), 0),
        "flat": lambda x, w: x.reshape(x.shape[0], -1),
        "fc": dense("fc", np.tanh),
        "square": dense("square"),
        "out": dense("out"),
    }


def run_port(port: Port, weights: dict[str, np.ndarray], x: np.ndarray) -> dict[str, np.ndarray]:
    outputs = {}
    for layer, function in port.items():
        x = function(x, weights).astype(np.float32)
        outputs[layer] = x
    return outputs


def port_inputs(client: Client, finished_run: dict[str, Any]) -> tuple[Any, Any]:
    weights = download_npz(client, f"/api/models/{finished_run['model']['id']}/weights")
    weights = {key: value.astype(np.float32) for key, value in weights.items()}
    response = client.get(
        f"/api/input-sets/{finished_run['input_set_id']}/data", params={"format": "npy"}
    )
    assert response.status_code == 200, response.text
    return weights, np.load(io.BytesIO(response.content), allow_pickle=False)


def verdicts(client: Client, run_id: int, backend: str, **params: Any) -> dict[str, str]:
    rows = client.divergence(run_id, backend=backend, **params)["rows"]
    return {row["layer"]: row["verdict"] for row in rows}


def test_a_numpy_port_from_the_weights_download_matches_keras(
    client: Client, finished_run: dict[str, Any]
) -> None:
    """The weights come with their layouts named, and a port written from them alone
    is within rounding of the reference and of keras-cpu on every layer."""
    run_id = finished_run["run"]["id"]
    described = client.get(
        f"/api/models/{finished_run['model']['id']}/weights", params={"format": "json"}
    ).json()["weights"]
    layouts = {w["key"]: w["layout"] for w in described}
    assert layouts["conv/kernel"].startswith("HWIO")
    assert layouts["fc/kernel"].startswith("(in_features, out_features)")
    assert np.array(next(w for w in described if w["key"] == "out/bias")["values"]).shape == (3,)
    weights, x = port_inputs(client, finished_run)
    assert x.shape == (3, 6, 6, 3) and x.dtype == np.float32
    answer = client.post_external(
        run_id, "my-port", run_port(numpy_port(weights), weights, x), note="np.dot port"
    )
    assert answer.status_code == 201, answer.text
    stored = answer.json()
    assert stored["backend"] == "ext:my-port" and stored["drift_start"] is None
    assert stored["compared_layers"] == 5 and stored["not_provided"] == []
    assert stored["environment"]["note"] == "np.dot port"
    assert set(verdicts(client, run_id, "ext:my-port").values()) <= WITHIN_ROUNDING
    against_keras = verdicts(client, run_id, "ext:my-port", against="keras-cpu")
    assert len(against_keras) == 5 and set(against_keras.values()) <= WITHIN_ROUNDING
    backends = [b["backend"] for b in client.get_run(run_id)["backend_runs"]]
    assert backends.count("ext:my-port") == 1
    csv = client.get(f"/api/runs/{run_id}/divergence", params={"format": "csv"}).text
    assert csv.count("\next:my-port,numpy-f64,accumulated,") == 5
    rows = client.divergence(run_id, backend="ext:my-port")["rows"]
    # Diagnosed: each layer's own error is within its rounding envelope; nothing to explain.
    assert {row["local_verdict"] for row in rows} <= WITHIN_ROUNDING
    assert all(0 <= row["local_rel_l2"] <= row["local_bound"] for row in rows)
    assert {(row["explained_by"], str(row["diagnosis"])) for row in rows} == {(None, "[]")}


def test_port_bugs_are_found_at_their_layer(client: Client, finished_run: dict[str, Any]) -> None:
    """A kernel used transposed, and a C port reading the Conv2D kernel's bytes in
    (out, in, h, w) order: each a mismatch first at exactly that layer, explained by
    name there (in the API's rows, the drift start and the CSV)."""
    run_id = finished_run["run"]["id"]
    weights, x = port_inputs(client, finished_run)
    port = numpy_port(weights)
    transposed = {**weights, "square/kernel": weights["square/kernel"].T}
    h, w, i, o = weights["conv/kernel"].shape
    as_oihw = weights["conv/kernel"].ravel().reshape(o, i, h, w).transpose(2, 3, 1, 0)
    oihw = {**weights, "conv/kernel": np.ascontiguousarray(as_oihw)}
    cases = (
        ("transposed", transposed, "square", "kernel-transposed", "(in,out) read as (out,in)"),
        ("oihw", oihw, "conv", "conv-kernel-layout", "HWIO read as OIHW"),
    )
    csv = ""
    for name, bugged, layer, cause, variant in cases:
        answer = client.post_external(run_id, name, run_port(port, bugged, x))
        assert answer.status_code == 201, answer.text
        start = answer.json()["drift_start"]
        assert start == {
            "layer": layer,
            "depth": start["depth"],
            "verdict": "mismatch",
            "explained_by": cause,
        }
        found = verdicts(client, run_id, f"ext:{name}")
        before = list(found)[: list(found).index(layer)]
        assert all(found[earlier] in WITHIN_ROUNDING for earlier in before), found
        rows = {r["layer"]: r for r in client.divergence(run_id, backend=f"ext:{name}")["rows"]}
        best = rows[layer]["diagnosis"][0]
        assert (best["hypothesis"], best["explains"], best["variant"]) == (cause, True, variant)
        assert best["rel_l2"] < 1e-6 and rows[layer]["local_rel_l2"] > 0.1
        # Downstream layers, recomputed from the port's own (wrong) inputs, are fine.
        after = list(rows)[list(rows).index(layer) + 1 :]
        assert all(rows[later]["explained_by"] is None for later in after), rows
        csv = client.get(f"/api/runs/{run_id}/divergence", params={"format": "csv"}).text
    header, *lines = csv.splitlines()
    assert header.endswith(
        ",verdict,local_rel_l2,local_bound,local_verdict,explained_by,precision_bound"
    )
    # An external port is judged as float32: no precision bound of its own.
    assert (
        sum(
            line.startswith("ext:oihw,") and line.endswith(",conv-kernel-layout,") for line in lines
        )
        == 1
    )


def test_float16_outputs_and_a_subset_of_layers(
    client: Client, finished_run: dict[str, Any]
) -> None:
    """float16 outputs are compared as the float16 values they are (reduced precision,
    not a mismatch); layers left out are reported as not provided."""
    run_id = finished_run["run"]["id"]
    weights, x = port_inputs(client, finished_run)
    outputs = run_port(numpy_port(weights), weights, x)
    half = {layer: value.astype(np.float16) for layer, value in outputs.items() if layer != "flat"}
    answer = client.post_external(run_id, "half", half)
    assert answer.status_code == 201, answer.text
    assert answer.json()["environment"]["dtypes"] == {"accumulated": ["float16"]}
    assert answer.json()["not_provided"] == ["flat"]
    assert client.divergence(run_id)["not_provided"]["ext:half"] == ["flat"]
    found = verdicts(client, run_id, "ext:half")
    assert set(found) == {"conv", "fc", "square", "out"}
    assert set(found.values()) == {"reduced-precision"}, found
    rows = {row["layer"]: row for row in client.divergence(run_id, backend="ext:half")["rows"]}
    assert {rows[n]["explained_by"] for n in ("conv", "square", "out")} == {"float16-activations"}
    # fc's input is flat, which the port left out: its own error cannot be told.
    assert (rows["fc"]["local_verdict"], rows["fc"]["diagnosis"]) == (None, None)


def test_bad_uploads_are_refused_naming_the_key_and_lose_nothing(
    client: Client, finished_run: dict[str, Any]
) -> None:
    run_id = finished_run["run"]["id"]
    weights, x = port_inputs(client, finished_run)
    good = run_port(numpy_port(weights), weights, x)
    assert client.post_external(run_id, "kept", good).status_code == 201
    before = client.get_run(run_id)["backend_runs"]
    rows_before = client.divergence(run_id, backend="ext:kept")["rows"]
    refusals = [
        ({**good, "dense_9": good["out"]}, "key 'dense_9' is no layer of the model"),
        (
            {**good, "fc": good["fc"][:, :4]},
            "key 'fc' has shape (3, 4); layer 'fc' outputs (3, 5)",
        ),
        ({"out": np.array(["a", "b", "c"])}, "key 'out' holds <U1 values"),
        ({"out": np.array([{}, {}, {}], dtype=object)}, "key 'out' holds object values"),
    ]
    for arrays, message in refusals:
        answer = client.post_external(run_id, "kept", arrays)
        assert answer.status_code == 422, answer.text
        assert message in answer.json()["detail"]
    not_npz = client.post(
        f"/api/runs/{run_id}/external",
        files={"file": ("out.npz", b"not a zip")},
        data={"name": "kept"},
    )
    assert not_npz.status_code == 422 and "not an .npz" in not_npz.json()["detail"]
    bad_name = client.post_external(run_id, "../etc", good)
    assert bad_name.status_code == 422 and "external name" in bad_name.json()["detail"]
    assert client.get_run(run_id)["backend_runs"] == before
    assert client.divergence(run_id, backend="ext:kept")["rows"] == rows_before


def test_isolated_outputs_from_the_feeds_locate_the_bug_alone(
    client: Client, finished_run: dict[str, Any]
) -> None:
    """Each layer of the port fed the reference's input to it (/feeds): with the
    transposed kernel only that layer mismatches, the layers after it are rounding."""
    run_id = finished_run["run"]["id"]
    weights, x = port_inputs(client, finished_run)
    feeds = download_npz(client, f"/api/runs/{run_id}/feeds")
    assert set(feeds) == {"conv", "flat", "fc", "square", "out"}
    assert np.array_equal(feeds["conv"], x)
    transposed = {**weights, "square/kernel": weights["square/kernel"].T}
    port = numpy_port(transposed)
    isolated = {layer: port[layer](feeds[layer], transposed).astype(np.float32) for layer in port}
    answer = client.post_external(run_id, "isolated-port", isolated, mode="isolated")
    assert answer.status_code == 201, answer.text
    found = verdicts(client, run_id, "ext:isolated-port", mode="isolated")
    assert found.pop("square") == "mismatch"
    assert set(found.values()) <= WITHIN_ROUNDING, found
    again = client.post_external(run_id, "isolated-port", run_port(port, weights, x))
    assert again.status_code == 201
    runs = client.get_run(run_id)["backend_runs"]
    [stored] = [b for b in runs if b["backend"] == "ext:isolated-port"]
    assert set(stored["environment"]["modes"]) == {"isolated", "accumulated"}


def test_unknown_runs_and_input_sets_are_not_found(client: Client) -> None:
    assert client.post_external(999999, "x", {}).status_code == 404
    assert client.get("/api/input-sets/999999/data").status_code == 404
    assert client.get("/api/runs/999999/feeds").status_code == 404


def expire_probe_tokens(server: LiveServer) -> None:
    """Make every probe token of the server's database expired a minute ago."""
    from sqlalchemy import create_engine, update
    from sqlalchemy.orm import Session

    from app.data.orm import ProbeToken, utcnow

    url = server.database_url or f"sqlite:///{server.data_dir.resolve() / 'driftbench.db'}"
    engine = create_engine(url)
    with Session(engine) as session:
        past = utcnow() - timedelta(minutes=1)
        session.execute(update(ProbeToken).values(expires_at=past))
        session.commit()
    engine.dispose()


def test_the_probe_page_measures_a_browser_and_refuses_bad_tokens(
    client: Client,
    server: LiveServer,
    finished_run: dict[str, Any],
    engine_options: EngineOptions,
) -> None:
    """Headless Chromium plays a device: the page runs every TF.js backend it has and
    posts each one's layers back with the device's record; a forged, expired or
    other-run token gets 403 and stores nothing."""
    from playwright.sync_api import sync_playwright

    run_id = finished_run["run"]["id"]
    probe = client.post(f"/api/runs/{run_id}/probe")
    assert probe.status_code == 201, probe.text
    link = probe.json()
    assert link["url"].endswith(link["path"]) and link["qr_svg"].startswith("<svg")
    token = link["path"].removeprefix("/probe/")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(engine_options.chromium_path), args=list(CHROMIUM_FLAGS)
        )
        page = browser.new_page()
        page.goto(server.url + link["path"])
        page.fill("#device", "headless-test")
        page.click("#start")
        page.wait_for_function(
            "['done', 'failed'].includes(document.getElementById('status').dataset.state)",
            timeout=180_000,
        )
        status = page.text_content("#status")
        browser.close()
    assert status is not None and status.startswith("done"), status
    runs = {b["backend"]: b for b in client.get_run(run_id)["backend_runs"]}
    measured = {b for b in runs if b.startswith("ext:probe/headless-test/")}
    assert measured >= {f"ext:probe/headless-test/{b}" for b in ("cpu", "wasm", "webgl")}
    record = runs["ext:probe/headless-test/webgl"]["environment"]["probe"]
    assert "Chrome" in record["user_agent"] and record["backend"] == "webgl"
    assert "SwiftShader" in record["webgl"]["renderer"]
    assert record["webgl"]["fragment_highp_float"]["precision"] == 23
    assert record["webgl_render_float32_capable"] is True
    assert "WEBGL_VERSION" in record["flags"]
    for backend in ("cpu", "wasm", "webgl"):
        found = verdicts(client, run_id, f"ext:probe/headless-test/{backend}")
        assert len(found) == 5 and set(found.values()) <= WITHIN_ROUNDING, (backend, found)

    body = {"meta": '{"backend": "cpu", "layers": []}'}
    forged = client.post(f"/probe/dbp_forged/runs/{run_id}/outputs", data=body)
    assert forged.status_code == 403 and "unknown probe token" in forged.json()["detail"]
    assert client.get("/probe/dbp_forged").status_code == 403
    other = client.start_run(
        model_id=finished_run["model"]["id"],
        input_set_id=finished_run["input_set_id"],
        backends=["numpy"],
    )
    client.wait_for_run(other["id"])
    elsewhere = client.post(f"/probe/{token}/runs/{other['id']}/outputs", data=body)
    assert elsewhere.status_code == 403 and "another run" in elsewhere.json()["detail"]
    expire_probe_tokens(server)
    expired = client.post(f"/probe/{token}/runs/{run_id}/outputs", data=body)
    assert expired.status_code == 403 and "expired" in expired.json()["detail"]
    assert client.get(link["path"]).status_code == 403
    assert {b["backend"] for b in client.get_run(run_id)["backend_runs"]} == set(runs)
    assert [b["backend"] for b in client.get_run(other["id"])["backend_runs"]] == [
        "numpy-f64",
        "numpy",
    ]


OWN_MAIN = r"""
#include <stdio.h>
#include <stdlib.h>
#include "port.h"

int main(void)
{
    float *inputs[DRIFTBENCH_INPUTS], *outputs[DRIFTBENCH_LAYERS];
    FILE *file = fopen("inputs.f32", "rb");
    for (int i = 0; i < DRIFTBENCH_INPUTS; i++) {
        inputs[i] = malloc(sizeof(float) * DRIFTBENCH_INPUT_SIZES[i]);
        if (fread(inputs[i], sizeof(float), DRIFTBENCH_INPUT_SIZES[i], file) == 0) return 1;
    }
    for (int k = 0; k < DRIFTBENCH_LAYERS; k++)
        outputs[k] = malloc(sizeof(float) * DRIFTBENCH_LAYER_SIZES[k]);
    driftbench_forward((const float *const *)inputs, outputs);
    for (int k = 0; k < DRIFTBENCH_LAYERS; k++)
        fwrite(outputs[k], sizeof(float), DRIFTBENCH_LAYER_SIZES[k], stdout);
    return 0;
}
"""


def test_the_c_port_download_compiles_and_gives_keras_numbers(
    client: Client, finished_run: dict[str, Any], keras: Any, tmp_path: Any
) -> None:
    """port.c, compiled here as a person would, run on the run's inputs: every layer
    within float32 rounding of what keras-cpu stored; the header declares the entry
    point and the sizes; a model the port cannot generate is refused naming the layer."""
    import subprocess

    model_id, run_id = finished_run["model"]["id"], finished_run["run"]["id"]
    source = client.get(f"/api/models/{model_id}/port.c")
    assert source.status_code == 200, source.text
    assert "attachment" in source.headers["content-disposition"]
    header = client.get(f"/api/models/{model_id}/port.c", params={"target": "header"}).text
    assert "void driftbench_forward(const float *const inputs[], float *const outputs[]);" in (
        header
    )
    assert "int main" not in header and header in source.text
    (tmp_path / "port.c").write_bytes(source.content)
    subprocess.run(
        ["cc", "-std=c99", "-O2", "-o", "port", "port.c", "-lm"], cwd=tmp_path, check=True
    )
    _, x = port_inputs(client, finished_run)
    x.astype("<f4").tofile(tmp_path / "inputs.f32")
    subprocess.run(
        ["./port", "accumulated", str(len(x)), "inputs.f32", "outputs.f32"],
        cwd=tmp_path,
        check=True,
    )
    values = np.fromfile(tmp_path / "outputs.f32", dtype="<f4")
    at = 0
    for layer in ["conv", "flat", "fc", "square", "out"]:
        expected = client.layer_output(run_id, "keras-cpu", layer)
        got = values[at : at + expected.size].reshape(expected.shape)
        at += expected.size
        error = np.linalg.norm(got - expected) / np.linalg.norm(expected)
        assert error < 1e-5, (layer, error)
    assert at == values.size

    # The header's use: a program of one's own calling driftbench_forward, port.c
    # compiled without its main; the same numbers for the first sample.
    (tmp_path / "port.h").write_text(header)
    (tmp_path / "mine.c").write_text(OWN_MAIN)
    subprocess.run(
        ["cc", "-std=c99", "-O2", "-DDRIFTBENCH_NO_MAIN", "-o", "mine", "mine.c", "port.c", "-lm"],
        cwd=tmp_path,
        check=True,
    )
    first = subprocess.run(["./mine"], cwd=tmp_path, check=True, capture_output=True).stdout
    mine = np.frombuffer(first, dtype="<f4")
    sizes = [
        client.layer_output(run_id, "keras-cpu", n)[0].size
        for n in ["conv", "flat", "fc", "square", "out"]
    ]
    starts = np.cumsum([0, *(len(x) * size for size in sizes)])
    expected_first = np.concatenate(
        [values[a : a + n] for a, n in zip(starts, sizes, strict=False)]
    )
    assert np.array_equal(mine, expected_first)

    L = keras.layers
    recurrent = keras.Sequential([keras.Input((4, 2)), L.GRU(3, name="memory"), L.Dense(1)])
    recurrent.save(tmp_path / "gru.keras")
    other = client.upload_model(tmp_path / "gru.keras")
    refused = client.get(f"/api/models/{other['id']}/port.c")
    assert refused.status_code == 422
    assert "unsupported: memory (GRU)" in refused.json()["detail"]
