"""Hostile and malformed uploads against a live server: each refused with its status
and a message naming the problem, the server still up, nothing stored changed.

The table of what was tried and how it was answered is written to
test-artifacts/hostile-inputs.md.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import httpx
import numpy as np
import pytest

from app.service_process import LiveServer

ARTIFACTS = Path("test-artifacts")
UPLOAD_LIMIT = 4 * 1024 * 1024
UNPACKED_LIMIT = 16 * 1024 * 1024
PARAM_LIMIT = 1_000_000
INPUT_LIMIT = 32 * 1024


@dataclass(frozen=True)
class Attempt:
    """One bad request: what it is, how to send it, and the answer it must get."""

    label: str
    send: Callable[[httpx.Client, dict[str, Any]], httpx.Response]
    status: int
    says: str


def zip_with(source: bytes, edit: Callable[[str, bytes], tuple[str, bytes] | None]) -> bytes:
    """A copy of a .keras zip with each entry passed through `edit` (None drops it)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(source)) as zin, zipfile.ZipFile(out, "w") as zout:
        for info in zin.infolist():
            edited = edit(info.filename, zin.read(info))
            if edited is not None:
                zout.writestr(edited[0], edited[1], zipfile.ZIP_DEFLATED)
    return out.getvalue()


def with_config(source: bytes, change: Callable[[dict[str, Any]], None]) -> bytes:
    def edit(name: str, data: bytes) -> tuple[str, bytes]:
        if name != "config.json":
            return name, data
        config = json.loads(data)
        change(config)
        return name, json.dumps(config).encode()

    return zip_with(source, edit)


def with_entry(source: bytes, name: str, data: bytes) -> bytes:
    out = io.BytesIO(source)
    with zipfile.ZipFile(out, "a") as archive:
        archive.writestr(name, data)
    return out.getvalue()


def zip_bomb(source: bytes) -> bytes:
    """The real model plus one entry of zeros that deflates about 1000:1."""
    out = io.BytesIO(source)
    with zipfile.ZipFile(out, "a", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("padding.bin", bytes(UNPACKED_LIMIT + 1024 * 1024))
    return out.getvalue()


def h5_edited(source: Path, edit: Callable[[h5py.File], None]) -> bytes:
    buffer = io.BytesIO(source.read_bytes())
    with h5py.File(buffer, "r+") as h5:
        edit(h5)
    return buffer.getvalue()


def first_dataset(h5: h5py.File) -> str:
    names: list[str] = []
    h5.visititems(lambda name, item: names.append(name) if isinstance(item, h5py.Dataset) else None)
    return names[0]


def wrong_weight_shape(h5: h5py.File) -> None:
    name = first_dataset(h5)
    del h5[name]
    h5.create_dataset(name, data=np.zeros((3,), dtype=np.float32))


def npy_bytes(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


def lying_npy(shape: tuple[int, ...]) -> bytes:
    """A valid .npy header that declares `shape` float32, followed by 16 bytes of data."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer, {"descr": "<f4", "fortran_order": False, "shape": shape}
    )
    return (
        np.lib.format.magic(1, 0) + buffer.getvalue()[len(np.lib.format.magic(1, 0)) :] + bytes(16)
    )


def npz_bytes(**arrays: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in arrays.items():
            archive.writestr(f"{name}.npy", data)
    return out.getvalue()


def post_model(filename: str, content: bytes) -> Callable[[httpx.Client, dict], httpx.Response]:
    return lambda client, _: client.post("/api/models", files={"file": (filename, content)})


def post_inputs(filename: str, content: bytes) -> Callable[[httpx.Client, dict], httpx.Response]:
    return lambda client, stored: client.post(
        f"/api/models/{stored['model_id']}/inputs", files={"file": (filename, content)}
    )


def post_json(path: str, body: Any) -> Callable[[httpx.Client, dict], httpx.Response]:
    return lambda client, stored: client.post(
        path.format(**stored),
        content=body if isinstance(body, bytes) else json.dumps(body).encode(),
        headers={"content-type": "application/json"},
    )


@pytest.fixture(scope="module")
def models(keras: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("hostile-models")
    model = keras.Sequential(
        [keras.Input((4,), name="x"), keras.layers.Dense(6, name="d1"), keras.layers.Dense(2)]
    )
    paths = {"keras": directory / "small.keras", "h5": directory / "small.h5"}
    for path in paths.values():
        model.save(path)
    return paths


def attempts(models: dict[str, Path]) -> list[Attempt]:
    keras_bytes = models["keras"].read_bytes()
    middle = len(keras_bytes) // 2
    flipped = bytes(byte ^ 0xFF for byte in keras_bytes[middle : middle + 256])
    corrupted = keras_bytes[:middle] + flipped + keras_bytes[middle + 256 :]

    def huge_dense(config: dict[str, Any]) -> None:
        dense = [layer for layer in config["config"]["layers"] if layer["class_name"] == "Dense"]
        dense[-1]["config"]["units"] = 2_000_000_000

    def drop_config(name: str, data: bytes) -> tuple[str, bytes] | None:
        return None if name == "config.json" else (name, data)

    def layers_not_a_list(config: dict[str, Any]) -> None:
        config["config"]["layers"] = "d1"

    ok_run = {"model_id": 0, "input_set_id": 0, "backends": ["numpy"]}
    return [
        Attempt("truncated .keras", post_model("t.keras", keras_bytes[:middle]), 422, "unreadable"),
        Attempt("corrupted .keras", post_model("c.keras", corrupted), 422, "c.keras"),
        Attempt("zip bomb", post_model("bomb.keras", zip_bomb(keras_bytes)), 422, "unpacks to"),
        Attempt(
            "zip entry ../../evil.py",
            post_model("escape.keras", with_entry(keras_bytes, "../../evil.py", b"import os")),
            422,
            "points outside the archive",
        ),
        Attempt(
            "Dense with 2e9 units",
            post_model("huge.keras", with_config(keras_bytes, huge_dense)),
            422,
            f"over the limit of {PARAM_LIMIT:,}",
        ),
        Attempt(
            "config 'layers' not a list",
            post_model("layers.keras", with_config(keras_bytes, layers_not_a_list)),
            422,
            "'layers' is not a list",
        ),
        Attempt(
            ".keras without config.json",
            post_model("empty.keras", zip_with(keras_bytes, drop_config)),
            422,
            "config.json",
        ),
        Attempt(
            ".h5 weights only",
            post_model(
                "w.h5", h5_edited(models["h5"], lambda h5: h5.attrs.__delitem__("model_config"))
            ),
            422,
            "no model_config",
        ),
        Attempt(
            ".h5 config not JSON",
            post_model(
                "j.h5",
                h5_edited(models["h5"], lambda h5: h5.attrs.__setitem__("model_config", "{")),
            ),
            422,
            "unreadable h5",
        ),
        Attempt(
            ".h5 without model_weights",
            post_model(
                "nw.h5", h5_edited(models["h5"], lambda h5: h5.__delitem__("model_weights"))
            ),
            422,
            "could not load",
        ),
        Attempt(
            ".h5 weight of the wrong shape",
            post_model("ws.h5", h5_edited(models["h5"], wrong_weight_shape)),
            422,
            "could not load",
        ),
        Attempt(
            ".npy of objects",
            post_inputs("o.npy", npy_bytes(np.array([{"a": 1}]), True)),
            422,
            "never unpickled",
        ),
        Attempt(
            ".npy of strings",
            post_inputs("s.npy", npy_bytes(np.array([["abcd"] * 4]))),
            422,
            "not numeric",
        ),
        Attempt(
            ".npy wrong shape",
            post_inputs("w.npy", npy_bytes(np.zeros((2, 5)))),
            422,
            "does not fit",
        ),
        Attempt(
            ".npy declaring 1e12 values",
            post_inputs("l.npy", lying_npy((10**12,))),
            422,
            "but the file holds 16 bytes",
        ),
        Attempt(
            ".npy over the input limit",
            post_inputs("b.npy", npy_bytes(np.zeros((INPUT_LIMIT, 4), np.float32))),
            422,
            f"over the {INPUT_LIMIT}-byte limit",
        ),
        Attempt(
            ".npz member declaring 1e12 values",
            post_inputs("l.npz", npz_bytes(x=lying_npy((10**12, 4)))),
            422,
            "l.npz[x.npy]",
        ),
        Attempt(
            "body over the upload limit",
            post_model("big.keras", b"PK\x03\x04" + bytes(UPLOAD_LIMIT + 1)),
            413,
            str(UPLOAD_LIMIT),
        ),
        Attempt(
            "generated batch over the input limit",
            post_json("/api/models/{model_id}/inputs", {"kind": "ones", "batch": 4096}),
            422,
            "DRIFTBENCH_MAX_INPUT_BYTES",
        ),
        Attempt(
            "batch as a string",
            post_json("/api/models/{model_id}/inputs", {"kind": "ones", "batch": "many"}),
            422,
            "batch",
        ),
        Attempt(
            "inputs body not JSON", post_json("/api/models/{model_id}/inputs", b"{"), 422, "JSON"
        ),
        Attempt(
            "model_id as a string",
            post_json("/api/runs", {**ok_run, "model_id": "abc"}),
            422,
            "model_id",
        ),
        Attempt(
            "backends as a string",
            post_json("/api/runs", {**ok_run, "backends": "numpy"}),
            422,
            "backends",
        ),
        Attempt("repeats of -1", post_json("/api/runs", {**ok_run, "repeats": -1}), 422, "repeats"),
        Attempt("run body a list", post_json("/api/runs", [1, 2]), 422, "object"),
    ]


def stored_state(client: httpx.Client, stored: dict[str, Any], data_dir: Path) -> dict[str, Any]:
    """Everything a refusal must leave alone: API listings and every stored file's hash."""
    files = {
        str(path.relative_to(data_dir)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(data_dir.rglob("*"))
        if path.is_file() and "driftbench.db" not in path.name and not path.name.endswith(".log")
    }
    return {
        "models": client.get("/api/models").json(),
        "inputs": client.get(f"/api/models/{stored['model_id']}").json(),
        "run": client.get(f"/api/runs/{stored['run_id']}").json(),
        "rows": client.get(f"/api/runs/{stored['run_id']}/divergence").json(),
        "files": files,
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = LiveServer(
        tmp_path_factory.mktemp("hostile"),
        None,
        max_upload_bytes=str(UPLOAD_LIMIT),
        max_unpacked_bytes=str(UNPACKED_LIMIT),
        max_model_params=str(PARAM_LIMIT),
        max_input_bytes=str(INPUT_LIMIT),
    )
    live.start()
    yield live
    live.stop()


def test_hostile_uploads_are_refused_and_nothing_stored_changes(
    server: LiveServer, models: dict[str, Path]
) -> None:
    with server.client() as client:
        run = client.wait_for_run(client.queue_run(models["keras"], ["numpy"], batch=3)["id"])
        assert run["status"] == "done"
        stored = {
            "model_id": run["model_id"],
            "input_set_id": run["input_set_id"],
            "run_id": run["id"],
        }
        before = stored_state(client, stored, server.data_dir)

        table = ["| bad input | status | answer |", "|---|---|---|"]
        wrong = []
        for attempt in attempts(models):
            response = attempt.send(client, stored)
            detail = json.dumps(response.json().get("detail"))
            table.append(f"| {attempt.label} | {response.status_code} | {detail[:160]} |")
            if response.status_code != attempt.status or attempt.says not in detail:
                wrong.append((attempt.label, response.status_code, detail))
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "hostile-inputs.md").write_text("\n".join(table) + "\n")

        assert wrong == []
        assert client.get("/healthz").status_code == 200
        assert stored_state(client, stored, server.data_dir) == before
        with models["h5"].open("rb") as stream:
            again = client.post("/api/models", files={"file": ("small.h5", stream)})
        assert again.status_code == 201, again.text
