"""The `driftbench` command line, as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app.cli.main import EXAMPLES, main
from app.core.config import settings
from tests.support import parse_tables

WITHIN_ROUNDING = {"identical", "rounding"}


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(settings, "data_dir", tmp_path / "data")
    return tmp_path / "data"


def test_run_dense10x50_console_script(tmp_path: Path) -> None:
    """The acceptance command, through the installed console script in a fresh process."""
    env = {**os.environ, "DRIFTBENCH_DATA_DIR": str(tmp_path / "data")}
    driftbench = Path(sys.executable).with_name("driftbench")
    completed = subprocess.run(
        [
            str(driftbench),
            "run",
            "dense10x50",
            "--generate",
            "ones",
            "--backends",
            "keras-cpu,numpy,numpy-f64",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    tables = parse_tables(completed.stdout)
    assert set(tables) == {
        "keras-cpu vs numpy-f64 (accumulated)",
        "numpy vs numpy-f64 (accumulated)",
    }
    for title, rows in tables.items():
        assert [row["layer"] for row in rows] == [f"dense_{i}" for i in range(1, 11)], title
        assert {row["verdict"] for row in rows} <= WITHIN_ROUNDING, title
    assert "drift starts: nowhere" in completed.stdout
    assert (tmp_path / "data" / "examples" / "dense10x50.keras").exists()


def test_run_writes_full_json_results(data_dir: Path, tmp_path: Path, capsys: Any) -> None:
    out = tmp_path / "results.json"
    status = main(
        [
            "run",
            "regression",
            "--generate",
            "normal",
            "--batch",
            "4",
            "--seed",
            "3",
            "--backends",
            "numpy,keras-cpu",
            "--mode",
            "both",
            "--repeats",
            "2",
            "--json",
            str(out),
        ]
    )
    assert status == 0
    report = json.loads(out.read_text())
    assert report["reference"] == "numpy-f64"
    assert report["inputs"]["arrays"]["input"]["shape"] == [4, 4]
    modes = {(c["backend"], c["mode"]) for c in report["comparisons"]}
    assert modes == {(b, m) for b in ("numpy", "keras-cpu") for m in ("accumulated", "isolated")}
    for comparison in report["comparisons"]:
        assert [row["layer"] for row in comparison["layers"]] == ["dense_1", "dense_2", "dense_3"]
        for row in comparison["layers"]:
            assert row["n"] == 4 * {"dense_1": 20, "dense_2": 10, "dense_3": 1}[row["layer"]]
            assert row["verdict"] in WITHIN_ROUNDING
    backends = {b["backend"]: b for b in report["backends"]}
    assert backends["keras-cpu"]["deterministic"] is True
    assert "tensorflow" in backends["keras-cpu"]["environment"]
    printed = capsys.readouterr().out
    assert "keras-cpu vs numpy-f64 (isolated)" in printed
    assert "keras-cpu vs numpy-f64: last layer rel_l2" in printed
    assert "amplification of the layer's own error" in printed


def test_against_another_backend_makes_it_the_reference(data_dir: Path, capsys: Any) -> None:
    status = main(["run", "regression", "--backends", "numpy", "--against", "keras-cpu"])
    assert status == 0
    tables = parse_tables(capsys.readouterr().out)
    assert list(tables) == ["numpy vs keras-cpu (accumulated)"]


def test_wrong_input_shape_is_a_clear_error(data_dir: Path, tmp_path: Path, capsys: Any) -> None:
    path = tmp_path / "inputs.npy"
    np.save(path, np.zeros((2, 7), dtype=np.float32))
    assert main(["run", "regression", "--inputs", str(path)]) == 2
    error = capsys.readouterr().err
    assert "array shape (2, 7) does not fit the model's input shape (batch, 4)" in error


def test_unknown_backend_is_a_clear_error(data_dir: Path, capsys: Any) -> None:
    assert main(["run", "regression", "--backends", "numpy,webgpu"]) == 2
    assert (
        "unknown backend 'webgpu'; valid backends: keras-cpu, numpy, numpy-f64"
        in capsys.readouterr().err
    )


def test_examples_writes_every_example(tmp_path: Path, capsys: Any) -> None:
    assert main(["examples", str(tmp_path / "models")]) == 0
    written = sorted(p.name for p in (tmp_path / "models").iterdir())
    assert written == sorted(f"{name}.keras" for name in EXAMPLES)
    from workers.engine.loading import load_artifact

    graph = load_artifact(tmp_path / "models" / "cifar_cnn.keras").graph
    assert [layer.class_name for layer in graph.compute_layers] == [
        "Conv2D",
        "Conv2D",
        "MaxPooling2D",
        "Dropout",
        "Conv2D",
        "Conv2D",
        "MaxPooling2D",
        "Dropout",
        "Flatten",
        "Dense",
        "Dropout",
        "Dense",
    ]
    dense = load_artifact(tmp_path / "models" / "dense10x50.keras").graph
    kernels = [layer.weights["kernel"] for layer in dense.compute_layers]
    assert len(kernels) == 10 and all(k.shape == (50, 50) for k in kernels)
    assert all(k.min() >= -1.0 and k.max() <= 1.0 for k in kernels)


def test_zoo_prints_one_line_per_model_and_writes_json(tmp_path: Path, capsys: Any) -> None:
    path = tmp_path / "zoo.json"
    status = main(["zoo", "--models", "ops_graph,text_classifier", "--backends", "numpy"])
    printed = capsys.readouterr().out
    assert status == 0
    header, _, *rows = printed.strip().splitlines()[-4:]
    assert header.split()[:5] == ["model", "layers", "params", "numpy-f64", "numpy"]
    assert [row.split()[0] for row in rows] == ["ops_graph", "text_classifier"]
    assert (
        main(["zoo", "--models", "text_classifier", "--backends", "numpy", "--json", str(path)])
        == 0
    )
    [row] = json.loads(path.read_text())
    assert row["model"] == "text_classifier" and row["within_rounding"]
    assert sum(row["verdicts"]["numpy"].values()) == row["layers"] == 4  # the mask too
    assert row["worst_layer"]["numpy"]["layer"] in {"embedding", "lstm", "classes"}


def test_randint_feeds_token_ids_and_float_generators_are_refused(
    data_dir: Path, tmp_path: Path, capsys: Any
) -> None:
    """An Embedding's input takes integers: randint generates them, uniform is refused."""
    from workers.engine.keras_env import import_keras
    from workers.engine.zoo import VOCABULARY, text_classifier

    model_path = tmp_path / "text.keras"
    text_classifier(import_keras()).save(model_path)
    json_path = tmp_path / "out.json"
    args = ["run", str(model_path), "--backends", "numpy,keras-cpu", "--json", str(json_path)]
    assert main([*args, "--generate", "randint", "--low", "0", "--high", str(VOCABULARY)]) == 0
    report = json.loads(json_path.read_text())
    assert {b["backend"]: b["status"] for b in report["backends"]}["keras-cpu"] == "done"
    assert report["inputs"]["arrays"]["tokens"]["dtype"] == "int32"
    capsys.readouterr()
    assert main([*args, "--generate", "uniform"]) == 2
    assert "input 'tokens' takes integers" in capsys.readouterr().err


def test_external_outputs_are_compared_like_a_backend(
    data_dir: Path, tmp_path: Path, capsys: Any, keras: Any
) -> None:
    """Generated inputs are written beside the JSON so a port is fed the same numbers; the
    port's outputs (a numpy np.dot port, one layer's kernel transposed in a second one)
    come back as ext:<name> tables; a file that does not fit is refused naming the key."""
    from tests.support import randomize_weights

    L = keras.layers
    model = keras.Sequential(
        [
            keras.Input((4,), name="x"),
            L.Dense(4, name="a"),
            L.Dense(4, name="b"),
            L.Dense(2, name="c"),
        ]
    )
    randomize_weights(model, seed=41)
    model_path = tmp_path / "dense.keras"
    model.save(model_path)
    first = tmp_path / "first" / "report.json"
    base = ["run", str(model_path), "--backends", "numpy"]
    assert main([*base, "--generate", "normal", "--batch", "3", "--json", str(first)]) == 0
    with np.load(first.with_name("report.inputs.npz")) as archive:
        x = archive["x"]
    kernels = {layer.name: [w.numpy() for w in layer.weights] for layer in model.layers}

    def port(swap: str | None) -> dict[str, np.ndarray]:
        outputs, values = {}, x
        for name, (kernel, bias) in kernels.items():
            values = np.dot(values, kernel.T if name == swap else kernel) + bias
            outputs[name] = values.astype(np.float32)
        return outputs

    np.savez(tmp_path / "good.npz", **port(None))
    np.savez(tmp_path / "swapped.npz", **port("b"))
    report = tmp_path / "second.json"
    capsys.readouterr()
    status = main(
        [
            *base,
            "--inputs",
            str(first.with_name("report.inputs.npz")),
            "--external",
            f"mine={tmp_path / 'good.npz'}",
            "--external",
            f"swapped={tmp_path / 'swapped.npz'}",
            "--json",
            str(report),
        ]
    )
    assert status == 0
    printed = capsys.readouterr().out
    tables = parse_tables(printed)
    mine = tables["ext:mine vs numpy-f64 (accumulated)"]
    assert [row["layer"] for row in mine] == ["a", "b", "c"]
    assert {row["verdict"] for row in mine} <= WITHIN_ROUNDING
    assert {row["explained_by"] for row in mine} == {"-"}
    swapped = {row["layer"]: row for row in tables["ext:swapped vs numpy-f64 (accumulated)"]}
    assert swapped["a"]["verdict"] in WITHIN_ROUNDING and swapped["b"]["verdict"] == "mismatch"
    # c is recomputed from the port's own (wrong) b: its own error is rounding.
    assert [swapped[n]["explained_by"] for n in "abc"] == ["-", "kernel-transposed", "-"]
    assert "drift starts: layer b (Dense), mismatch; explained by: kernel-transposed" in printed
    saved = json.loads(report.read_text())
    starts = {c["backend"]: c["drift_start"] for c in saved["comparisons"]}
    assert starts["ext:swapped"] == {
        "layer": "b",
        "verdict": "mismatch",
        "explained_by": "kernel-transposed",
    }
    [swapped_rows] = [c["layers"] for c in saved["comparisons"] if c["backend"] == "ext:swapped"]
    best = swapped_rows[1]["diagnosis"][0]
    assert (best["hypothesis"], best["explains"]) == ("kernel-transposed", True)
    assert best["rel_l2"] < 1e-6 < swapped_rows[1]["local_rel_l2"]
    np.savez(tmp_path / "bad.npz", b=np.zeros((3, 5), np.float32))
    bad = main(
        [*base, "--generate", "normal", "--batch", "3", "--external", f"bad={tmp_path / 'bad.npz'}"]
    )
    assert bad == 2
    assert "key 'b' has shape (3, 5); layer 'b' outputs (3, 4)" in capsys.readouterr().err
