"""Dashboards in real headless Chromium against a live server with real stored runs."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from playwright.sync_api import Page, sync_playwright

from app.core.config import settings
from app.service_process import LiveServer
from driftbench.client import Client
from tests.support import backdate, expire_outputs_cli

HOSTILE_NAME = "<img src=x onerror=alert(1)>"
ARTIFACTS = Path(os.environ.get("DRIFTBENCH_TEST_ARTIFACTS", "test-artifacts")) / "dashboards"
BACKENDS = ["keras-cpu", "numpy", "tfjs-cpu", "tfjs-wasm"]


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory, example: Any) -> Iterator[dict[str, Any]]:
    """A live server holding a finished run of dense10x50 under a hostile name."""
    server = LiveServer(tmp_path_factory.mktemp("dashboards"), None)
    server.start()
    try:
        with server.client() as client:
            model = client.upload_model(
                example("dense10x50").path, name=HOSTILE_NAME, tags=["<b>bold</b>", "demo"]
            )
            input_id = client.add_inputs(model["id"], kind="uniform", batch=4, seed=1)["id"]
            run_id = client.start_run(
                model_id=model["id"],
                input_set_id=input_id,
                backends=BACKENDS,
                modes=["accumulated", "isolated"],
            )["id"]
            assert client.wait_for_run(run_id)["status"] == "done"
            yield {"server": server, "model": model, "run_id": run_id, "client": client}
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(settings.chromium_path),
            args=[
                "--no-sandbox",
                "--disable-background-networking",
                "--disable-sync",
                "--disable-component-update",
                "--no-first-run",
                "--enable-unsafe-swiftshader",
            ],
        )
        yield chromium
        chromium.close()


def open_page(browser: Any, url: str, draws: int = 1) -> tuple[Page, list[str]]:
    """Load a page, wait for its charts, and collect console errors and dialogs."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on(
        "dialog", lambda dialog: (problems.append(f"dialog: {dialog.message}"), dialog.dismiss())
    )
    page.goto(url)
    page.wait_for_function(f"Number(document.body.dataset.ready || 0) >= {draws}", timeout=60000)
    return page, problems


def traces(page: Page, div: str = "chart") -> list[dict[str, Any]]:
    return page.evaluate(f"""() => document.getElementById('{div}').data.map(t => (
        {{name: t.name, x: Array.from(t.x || []), y: Array.from(t.y || [])}}))""")


def screenshot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def api(stored: dict[str, Any], path: str, **params: Any) -> Any:
    response = stored["client"].get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def test_index_lists_models_with_latest_run_and_worst_verdict(stored: dict, browser: Any) -> None:
    page, problems = open_page(browser, stored["server"].url + "/")
    rows = page.locator("#models tbody tr")
    assert rows.count() == 1
    assert rows.first.locator("td").nth(1).inner_text() == HOSTILE_NAME
    assert f"run {stored['run_id']} (done)" in rows.first.inner_text()
    assert rows.first.locator("td").nth(6).inner_text() == "rounding"
    assert page.locator("img").count() == 0 and page.locator("main b").count() == 0
    screenshot(page, "index")
    assert problems == []
    for path in ("/models/999999", "/runs/999999", "/runs/999999/browser"):
        assert httpx.get(stored["server"].url + path).status_code == 404


def test_model_page_draws_median_and_p95_per_backend(stored: dict, browser: Any) -> None:
    model_id = stored["model"]["id"]
    page, problems = open_page(browser, f"{stored['server'].url}/models/{model_id}")
    drawn = traces(page)
    expected = []
    for backend in BACKENDS:
        drift = api(stored, f"/api/models/{model_id}/drift", backend=backend, metric="rel_l2")
        expected += [
            (f"{backend} median", [r["median"] for r in drift["layers"]]),
            (f"{backend} p95", [r["p95"] for r in drift["layers"]]),
        ]
    assert [(t["name"], t["y"]) for t in drawn] == expected
    assert all(len(t["x"]) == 10 for t in drawn)
    assert page.locator("#model-name").inner_text() == HOSTILE_NAME
    assert "<b>bold</b>" in page.locator("#model-meta").inner_text()
    assert page.locator("img").count() == 0 and page.locator("main b").count() == 0
    screenshot(page, "model")
    assert problems == []


def test_run_page_charts_follow_metric_and_reference(stored: dict, browser: Any) -> None:
    run_id = stored["run_id"]
    page, problems = open_page(browser, f"{stored['server'].url}/runs/{run_id}")
    for mode, div in (("accumulated", "chart"), ("isolated", "chart-isolated")):
        rows = api(stored, f"/api/runs/{run_id}/divergence", mode=mode)["rows"]
        drawn = {t["name"]: t["y"] for t in traces(page, div)}
        assert set(drawn) == set(BACKENDS)
        for backend in BACKENDS:
            assert drawn[backend] == [r["rel_l2"] for r in rows if r["backend"] == backend]
    assert page.locator("#model-link").inner_text() == HOSTILE_NAME
    assert page.locator("img").count() == 0
    assert page.locator("#divergence tbody tr").count() == len(BACKENDS) * 10
    assert page.locator("#divergence tbody tr.verdict-rounding").count() > 0
    assert "SwiftShader" not in page.locator("#backends").inner_text()
    assert "4.22.0" in page.locator("#backends").inner_text()
    screenshot(page, "run")

    page.select_option("#metric", "max_abs")
    page.wait_for_function("Number(document.body.dataset.ready) >= 2")
    rows = api(stored, f"/api/runs/{run_id}/divergence")["rows"]
    drawn = {t["name"]: t["y"] for t in traces(page)}
    assert drawn["numpy"] == [r["max_abs"] for r in rows if r["backend"] == "numpy"]

    page.select_option("#against", "keras-cpu")
    page.wait_for_function("Number(document.body.dataset.ready) >= 3")
    rows = api(stored, f"/api/runs/{run_id}/divergence", against="keras-cpu")["rows"]
    drawn = {t["name"]: t["y"] for t in traces(page)}
    assert set(drawn) == {"numpy-f64", "numpy", "tfjs-cpu", "tfjs-wasm"}
    assert drawn["tfjs-cpu"] == [r["max_abs"] for r in rows if r["backend"] == "tfjs-cpu"]
    assert problems == []


def test_browser_vs_python_view(stored: dict, browser: Any) -> None:
    run_id = stored["run_id"]
    page, problems = open_page(browser, f"{stored['server'].url}/runs/{run_id}/browser")
    rows = api(stored, f"/api/runs/{run_id}/divergence", against="keras-cpu")["rows"]
    drawn = {t["name"]: t["y"] for t in traces(page)}
    assert set(drawn) == {"tfjs-cpu", "tfjs-wasm"}
    assert drawn["tfjs-wasm"] == [r["rel_l2"] for r in rows if r["backend"] == "tfjs-wasm"]
    scatter = traces(page, "scatter")
    assert [t["name"] for t in scatter] == ["tfjs-cpu", "tfjs-wasm"]
    assert all(len(t["x"]) == len(t["y"]) == 4 * 50 for t in scatter)
    assert [len(t["x"]) for t in traces(page, "histogram")] == [200, 200]
    screenshot(page, "browser-vs-python")
    page.select_option("#layer", "dense_1")
    page.wait_for_function("Number(document.body.dataset.ready) >= 2")
    keras = stored["client"].get(f"/api/runs/{run_id}/outputs/keras-cpu/dense_1").content
    import io

    import numpy as np

    expected = np.load(io.BytesIO(keras)).ravel()
    assert np.array_equal(np.array(traces(page, "scatter")[0]["x"], dtype=np.float32), expected)
    assert problems == []


def test_depth_page_curves_per_backend(stored: dict, browser: Any) -> None:
    architecture = stored["model"]["architecture"]
    page, problems = open_page(
        browser, f"{stored['server'].url}/drift/depth?architecture={architecture}"
    )
    drawn = traces(page)
    depth = api(stored, "/api/drift/depth", architecture=architecture, backend="numpy")
    numpy_curve = next(t for t in drawn if t["name"].startswith("numpy "))
    assert numpy_curve["x"] == list(range(1, 11))
    assert numpy_curve["y"] == [row["mean"] for row in depth["depths"]]
    assert len(drawn) == len(BACKENDS)
    assert len(traces(page, "growth")) == len(BACKENDS)
    screenshot(page, "depth")
    assert problems == []


def test_run_page_updates_while_the_run_is_in_progress(stored: dict, browser: Any) -> None:
    client: Client = stored["client"]
    model_id = stored["model"]["id"]
    input_id = client.add_inputs(model_id, kind="ones")["id"]
    run_id = client.start_run(
        model_id=model_id, input_set_id=input_id, backends=["tfjs-cpu", "numpy"]
    )["id"]
    page, problems = open_page(browser, f"{stored['server'].url}/runs/{run_id}")
    page.wait_for_function(
        "document.getElementById('status').textContent === 'done'", timeout=120000
    )
    page.wait_for_function("document.getElementById('chart').data !== undefined")
    assert {t["name"] for t in traces(page)} == {"tfjs-cpu", "numpy"}
    assert problems == []


def test_pages_of_a_run_whose_outputs_expired(stored: dict, browser: Any) -> None:
    """The metrics still draw; the per-value view says the layer outputs are gone."""
    client: Client = stored["client"]
    server: LiveServer = stored["server"]
    model_id = stored["model"]["id"]
    input_id = client.add_inputs(model_id, kind="ones")["id"]
    run_id = client.start_run(
        model_id=model_id, input_set_id=input_id, backends=["keras-cpu", "tfjs-cpu"]
    )["id"]
    assert client.wait_for_run(run_id)["status"] == "done"
    # The browser view's comparison, made while the arrays were still there.
    client.compare(run_id, "keras-cpu")
    assert len(client.divergence(run_id, against="keras-cpu")["rows"]) == 2 * 10
    backdate(f"sqlite:///{server.data_dir / 'driftbench.db'}", run_id, days=2)
    assert expire_outputs_cli(server.data_dir, output_retention_days="1").returncode == 0

    page, problems = open_page(browser, f"{server.url}/runs/{run_id}")
    assert page.locator("#divergence tbody tr").count() == 2 * 10
    assert page.locator("#against option").all_inner_texts() == ["numpy-f64"]
    assert page.locator("#backends").inner_text().count("outputs expired") == 3
    assert page.locator("#error").is_hidden()
    assert problems == []

    page, problems = open_page(browser, f"{server.url}/runs/{run_id}/browser")
    assert {t["name"] for t in traces(page)} == {"tfjs-cpu"}
    assert (
        page.locator("#error")
        .inner_text()
        .startswith("outputs expired: the layer outputs of keras-cpu were deleted on ")
    )
    assert page.locator("#layer").is_disabled()
    assert page.evaluate("document.getElementById('scatter').data === undefined")
    assert problems == []


def test_run_page_makes_a_probe_link_with_its_qr_code(stored: dict, browser: Any) -> None:
    server = stored["server"]
    page, problems = open_page(browser, f"{server.url}/runs/{stored['run_id']}")
    page.click("#probe-button")
    page.wait_for_selector("#probe-qr img")
    href = page.locator("#probe-link").get_attribute("href")
    assert href is not None and href.startswith(f"{server.url}/probe/dbp_")
    qr = page.locator("#probe-qr img").get_attribute("src")
    assert qr is not None and qr.startswith("data:image/svg+xml;base64,")
    probe_page = httpx.get(href, timeout=120)
    assert probe_page.status_code == 200 and "probe-config" in probe_page.text
    assert problems == []


def test_run_and_browser_pages_say_why_a_backend_drifts(stored: dict, browser: Any) -> None:
    """float16 textures (tfjs-webgl-f16): where drift starts, and the diagnosis naming
    float16 activations, on the run page and on the browser vs Python page."""
    client: Client = stored["client"]
    server: LiveServer = stored["server"]
    model_id = stored["model"]["id"]
    input_id = client.add_inputs(model_id, kind="uniform", batch=4)["id"]
    run_id = client.start_run(
        model_id=model_id, input_set_id=input_id, backends=["keras-cpu", "tfjs-webgl-f16"]
    )["id"]
    assert client.wait_for_run(run_id)["status"] == "done"
    rows = api(stored, f"/api/runs/{run_id}/divergence")["rows"]
    f16 = [row for row in rows if row["backend"] == "tfjs-webgl-f16"]
    # Past the layer that overflows float16 (NaN in the texture), layers pass the NaN on.
    explained = [row for row in f16 if row["explained_by"] == "float16-activations"]
    inherited = [row for row in f16 if row not in explained]
    assert {row["verdict"] for row in f16[: len(explained)]} <= {"reduced-precision", "nonfinite"}
    assert len(explained) >= 7 and f16[: len(explained)] == explained
    assert {(row["explained_by"], row["local_verdict"]) for row in inherited} <= {
        (None, "identical")
    }
    start = (
        "tfjs-webgl-f16: drift starts at dense_1 (reduced-precision), "
        "explained by float16-activations"
    )

    page, problems = open_page(browser, f"{server.url}/runs/{run_id}")
    starts = page.locator("#drift-starts li").all_inner_texts()
    assert starts == ["keras-cpu: every layer within rounding", start]
    assert page.locator("#divergence").inner_text().count("float16-activations") == len(explained)
    tooltip = page.locator("#divergence tbody tr").nth(10).get_attribute("title") or ""
    # float16 textures: the layer's own error against what float16 allows it, then causes.
    own, best = tooltip.split("\n")[:2]
    assert own.startswith("own error ") and "the backend's precision allows " in own, tooltip
    assert best.startswith("float16-activations (") and best.endswith(", explains"), tooltip
    screenshot(page, "run-diagnosis")
    assert problems == []

    page, problems = open_page(browser, f"{server.url}/runs/{run_id}/browser")
    assert page.locator("#drift-starts").inner_text() == start
    diagnosis = page.locator("#diagnosis tbody tr")
    assert diagnosis.count() == len(explained)
    assert (
        "float16-activations (inputs, weights and output): rel_l2" in diagnosis.first.inner_text()
    )
    screenshot(page, "browser-diagnosis")
    assert problems == []


def test_a_person_uploads_a_model_makes_inputs_runs_and_reads_a_layer(
    stored: dict, browser: Any, example: Any
) -> None:
    """The whole path in the page: a model from the file picker, generated inputs, three
    backends, the run watched to the end; then the run's heatmap, and a click on a cell
    opens that layer: its numbers, its error histogram (whose counts are the layer's
    values) and the scatter against the reference."""
    server: LiveServer = stored["server"]
    page, problems = open_page(browser, f"{server.url}/new")
    page.set_input_files("#model-file", str(example("regression").path))
    page.wait_for_function("document.getElementById('model-summary').textContent !== ''")
    assert page.locator("#model-summary").inner_text().startswith("regression: 3 layers")
    page.click("#layers-details summary")
    assert "dense_2\tDense\t[null,10]" in page.locator("#model-layers").inner_text()
    support = page.locator("#support tbody").inner_text()
    assert "keras-cpu\tyes" in support and "keras-gpu\tno: " in support
    page.fill("#generator input[name=batch]", "4")
    page.click("#generate")
    page.wait_for_function("document.getElementById('inputs-summary').textContent !== ''")
    assert page.locator("#inputs-summary").inner_text().endswith("input [4,4]")
    for box in page.locator("input[name=backend]").all():
        if box.is_enabled():
            box.set_checked(box.get_attribute("value") in ("numpy", "keras-cpu", "tfjs-cpu"))
    page.check("#mode-isolated")
    page.click("#start")
    page.wait_for_function(
        "['done', 'failed'].includes(document.getElementById('run-status').textContent)",
        timeout=120000,
    )
    assert page.locator("#run-status").inner_text() == "done"
    progress = page.locator("#progress tbody tr").all_inner_texts()
    assert sorted(line.split("\t")[0] for line in progress) == [
        "keras-cpu",
        "numpy",
        "numpy-f64",
        "tfjs-cpu",
    ]
    assert all(
        line.split("\t")[1] == "done" and line.split("\t")[2].endswith(" s") for line in progress
    )
    screenshot(page, "new-run")
    run_url = page.locator("#run-link").get_attribute("href")
    assert problems == []

    page, problems = open_page(browser, f"{server.url}{run_url}")
    heatmap = page.evaluate(
        "() => { const t = document.getElementById('heatmap').data[0];"
        " return {y: t.y, columns: t.z[0].length, text: t.text}; }"
    )
    assert heatmap["y"] == ["keras-cpu", "numpy", "tfjs-cpu"] and heatmap["columns"] == 3
    area = page.locator("#heatmap .nsewdrag").bounding_box()
    assert area is not None
    # Plotly draws the first backend at the bottom: click its middle layer.
    page.mouse.click(area["x"] + area["width"] * 0.5, area["y"] + area["height"] * (5 / 6))
    page.wait_for_function("!document.getElementById('layer-detail').hidden")
    page.wait_for_function(
        "document.getElementById('detail-scatter').data?.[0]?.x?.length > 0", timeout=30000
    )
    title = page.locator("#detail-title").inner_text()
    assert title.startswith("keras-cpu · dense_2 (Dense) vs numpy-f64: ")
    counts = page.evaluate("() => document.getElementById('detail-histogram').data[0].y")
    run_id = int(run_url.rsplit("/", 1)[1])
    [row] = [
        r
        for r in api(stored, f"/api/runs/{run_id}/divergence")["rows"]
        if (r["backend"], r["layer"]) == ("keras-cpu", "dense_2")
    ]
    assert sum(counts) == row["n"] == 4 * 10
    scatter = page.evaluate("() => document.getElementById('detail-scatter').data[0].x.length")
    assert scatter == row["n"]
    numbers = page.locator("#detail-numbers").inner_text()
    assert f"rel_l2\t{row['rel_l2']:.4g}".replace("e-0", "e-") in numbers.replace("e-0", "e-")
    screenshot(page, "run-heatmap-detail")
    assert problems == []


def test_a_bad_upload_shows_the_api_message(stored: dict, browser: Any) -> None:
    """Through the file picker and by drag-and-drop: the API's own refusal, in words."""
    server: LiveServer = stored["server"]
    page, problems = open_page(browser, f"{server.url}/new")
    page.set_input_files(
        "#model-file",
        files=[{"name": "notes.keras", "mimeType": "application/octet-stream", "buffer": b"hi"}],
    )
    page.wait_for_function("!document.getElementById('error').hidden")
    assert "not a Keras model" in page.locator("#error").inner_text()
    page.evaluate("() => { document.getElementById('error').hidden = true; }")
    page.evaluate(
        """() => {
            const data = new DataTransfer();
            data.items.add(new File(['not a model either'], 'dropped.h5'));
            const zone = document.getElementById('drop-zone');
            zone.dispatchEvent(new DragEvent('drop', {dataTransfer: data, bubbles: true}));
        }"""
    )
    page.wait_for_function("!document.getElementById('error').hidden")
    assert "/api/models: " in page.locator("#error").inner_text()
    screenshot(page, "bad-upload")
    # The browser logs the refused requests themselves; nothing else went wrong.
    assert all("Failed to load resource" in message for message in problems), problems


def test_a_model_is_deleted_from_its_page(stored: dict, browser: Any, example: Any) -> None:
    """After the confirmation, the model and its runs are gone and the page goes home."""
    server: LiveServer = stored["server"]
    client: Client = stored["client"]
    model = client.upload_model(example("autoencoder").path)
    page = browser.new_page()
    page.on("dialog", lambda dialog: dialog.accept())
    page.goto(f"{server.url}/models/{model['id']}")
    page.wait_for_function("Number(document.body.dataset.ready || 0) >= 1", timeout=60000)
    with page.expect_navigation():
        page.click("#delete-model")
    assert page.url == f"{server.url}/"
    assert client.get(f"/api/models/{model['id']}").status_code == 404


def test_own_port_uploaded_from_the_page_and_two_runs_compared(
    stored: dict, browser: Any, tmp_path: Path
) -> None:
    """A port with dense_5 scaled by 1.5 goes into the stored run through the API, the
    fixed port into a second run through the run page's form; the compare page then
    says what the fix made better, layer by layer, with the API's own numbers."""
    server: LiveServer = stored["server"]
    client: Client = stored["client"]
    before = stored["run_id"]
    input_set = client.get_run(before)["input_set_id"]
    layers = [f"dense_{i}" for i in range(1, 11)]
    exact = {
        layer: client.layer_output(before, "numpy-f64", layer).astype(np.float32)
        for layer in layers
    }
    buggy = {**exact, "dense_5": exact["dense_5"] * np.float32(1.5)}
    assert client.post_external(before, "port", buggy).status_code == 201
    after = client.start_run(
        model_id=stored["model"]["id"], input_set_id=input_set, backends=["numpy"]
    )["id"]
    assert client.wait_for_run(after)["status"] == "done"
    fixed = tmp_path / "fixed.npz"
    np.savez(fixed, **exact)

    page, problems = open_page(browser, f"{server.url}/runs/{after}")
    page.fill("#external input[name=name]", "port")
    page.set_input_files("#external input[name=file]", str(fixed))
    page.click("#external-button")
    page.wait_for_function("document.getElementById('external-result').textContent !== ''")
    assert (
        page.locator("#external-result")
        .inner_text()
        .startswith("ext:port: 10 layers compared (accumulated); every layer within rounding")
    )
    page.wait_for_function(
        "document.getElementById('heatmap').data[0].y.includes('ext:port')", timeout=30000
    )
    assert problems == []

    # From the buggy run's page: compare it with the fixed one.
    page, problems = open_page(browser, f"{server.url}/runs/{before}")
    page.select_option("#compare-with", str(after))
    with page.expect_navigation():
        page.click("#compare-button")
    page.wait_for_function("Number(document.body.dataset.ready || 0) >= 1", timeout=60000)
    assert page.url == f"{server.url}/compare?before={before}&after={after}"
    rows = [line.split("\t") for line in page.locator("#changes tbody tr").all_inner_texts()]
    port = {row[2]: row for row in rows if row[0] == "ext:port"}
    assert set(port) == set(layers)
    assert port["dense_5"][6] == "mismatch → identical" and port["dense_5"][7] == "better"
    assert all(port[layer][7] == "same" for layer in layers[:4])
    api_before = {
        row["layer"]: row
        for row in api(stored, f"/api/runs/{before}/divergence", backend="ext:port")["rows"]
    }
    assert float(port["dense_5"][3]) == pytest.approx(api_before["dense_5"]["rel_l2"], rel=1e-3)
    summary = page.locator("#summary").inner_text()
    better = sum(1 for layer in layers if port[layer][7] == "better")
    assert f"ext:port: {better} better, 0 worse" in summary and better >= 1
    screenshot(page, "compare-runs")
    assert problems == []


def test_the_layer_table_sorts_and_pages(stored: dict, browser: Any) -> None:
    """Sixty rows (six backends of dense10x50): fifty a page, sorted by a header click,
    numbers with four significant digits."""
    server: LiveServer = stored["server"]
    client: Client = stored["client"]
    input_set = client.get_run(stored["run_id"])["input_set_id"]
    backends = ["keras-cpu", "numpy", "tfjs-cpu", "tfjs-wasm", "tflite", "tflite-f16"]
    run_id = client.start_run(
        model_id=stored["model"]["id"], input_set_id=input_set, backends=backends
    )["id"]
    assert client.wait_for_run(run_id)["status"] == "done"
    rows = api(stored, f"/api/runs/{run_id}/divergence")["rows"]
    assert len(rows) == 60
    page, problems = open_page(browser, f"{server.url}/runs/{run_id}")
    pager = page.locator("#divergence + .pager")
    assert "page 1 of 2 (60 rows)" in pager.inner_text()
    assert page.locator("#divergence tbody tr").count() == 50
    header = page.locator("#divergence thead th", has_text="rel_l2").first
    header.click()
    column = [
        cells.split("\t")[6] for cells in page.locator("#divergence tbody tr").all_inner_texts()
    ]
    ordered = sorted(rows, key=lambda row: row["rel_l2"])
    assert [float(value) for value in column[:3]] == pytest.approx(
        [row["rel_l2"] for row in ordered[:3]], rel=1e-3
    )
    header.click()
    first = page.locator("#divergence tbody tr").first.inner_text().split("\t")
    assert float(first[6]) == pytest.approx(ordered[-1]["rel_l2"], rel=1e-3)
    assert first[0] == ordered[-1]["backend"]
    pager.locator("button", has_text="next").click()
    assert "page 2 of 2 (60 rows)" in pager.inner_text()
    assert page.locator("#divergence tbody tr").count() == 10
    screenshot(page, "run-table-sorted")
    assert problems == []
