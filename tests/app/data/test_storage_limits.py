"""A full data directory, on a real small filesystem: uploads answer 507 naming the file,
a job whose outputs do not fit fails that backend with the reason while the run goes on,
nothing stored before is damaged, and once there is room again runs succeed."""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

from app.data.orm import InputSet, StoredModel
from app.service_process import LiveServer
from driftbench.client import Client

DISK_BYTES = 8 * 1024 * 1024
BATCH = 256
PAGE = 4096
FREE = re.compile(r": (\d+) bytes free$")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB tmpfs mounted for this test (the suite runs as root, as CI does)."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES}", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.fail(
            f"cannot mount a {DISK_BYTES}-byte tmpfs at {mount_point}: this test needs root "
            f"(or CAP_SYS_ADMIN) to fill a real filesystem: {mounted.stderr.strip()}"
        )
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


def fill(disk: Path, leave: int) -> Path:
    """Take all of the disk's free space but `leave` bytes with one allocated file."""
    filler = disk / "filler"
    filler.unlink(missing_ok=True)
    size = shutil.disk_usage(disk).free - leave
    descriptor = os.open(filler, os.O_CREAT | os.O_WRONLY)
    try:
        os.posix_fallocate(descriptor, 0, size)
    finally:
        os.close(descriptor)
    assert shutil.disk_usage(disk).free <= leave + PAGE
    return filler


def snapshot(data_dir: Path) -> dict[str, str]:
    """Every stored file by path, with the sha256 of its bytes."""
    return {
        str(path.relative_to(data_dir)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(data_dir.rglob("*"))
        if path.is_file()
    }


def generate(client: Client, model_id: int, seed: int) -> httpx.Response:
    return client.post(
        f"/api/models/{model_id}/inputs", json={"kind": "uniform", "batch": BATCH, "seed": seed}
    )


def start_run(client: Client, model_id: int, input_set_id: int) -> int:
    return client.start_run(model_id=model_id, input_set_id=input_set_id, backends=["numpy"])["id"]


def stored_rows(database_url: str) -> tuple[int | None, int | None]:
    """How many models and input sets the database holds."""
    engine = create_engine(database_url)
    with Session(engine) as session:
        models = session.scalar(select(func.count()).select_from(StoredModel))
        input_sets = session.scalar(select(func.count()).select_from(InputSet))
    engine.dispose()
    return models, input_sets


def test_a_full_disk_fails_cleanly_and_damages_nothing(
    example: Any, small_disk: Path, tmp_path: Path
) -> None:
    data_dir = small_disk / "data"
    database_url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    server = LiveServer(data_dir, database_url)
    server.log_path = tmp_path / "server.log"  # the log must not compete for the space
    server.start()
    try:
        with server.client() as client:
            model_id = client.upload_model(example("dense10x50").path)["id"]
            earlier_id = start_run(
                client, model_id, generate(client, model_id, seed=1).json()["id"]
            )
            earlier = client.wait_for_run(earlier_id)
            assert earlier["status"] == "done", earlier
            earlier_rows = client.get(f"/api/runs/{earlier_id}/divergence").json()
            assert len(earlier_rows["rows"]) == 10
            sizes = {
                backend: (data_dir / "outputs" / str(earlier_id) / f"{backend}.npz").stat().st_size
                for backend in ("numpy-f64", "numpy")
            }
            input_set_id = generate(client, model_id, seed=2).json()["id"]
            before = snapshot(data_dir)
            rows_before = stored_rows(database_url)

            # Room for the reference's outputs and half of the candidate's.
            filler = fill(small_disk, sizes["numpy-f64"] + sizes["numpy"] // 2)
            full_id = start_run(client, model_id, input_set_id)
            run = client.wait_for_run(full_id)
            assert run["status"] == "done", run
            backends = {b["backend"]: b for b in run["backend_runs"]}
            assert backends["numpy-f64"]["status"] == "done", backends["numpy-f64"]
            assert backends["numpy"]["status"] == "failed"
            target = data_dir.resolve() / "outputs" / str(full_id) / "numpy.npz"
            reason = backends["numpy"]["reason"]
            assert reason.startswith(
                f"no space left on device writing {target} "
                f"(DRIFTBENCH_DATA_DIR={data_dir.resolve()}): "
            ), reason
            free = int(FREE.search(reason).group(1))  # type: ignore[union-attr]
            assert 0 < free < sizes["numpy"]  # the space left once the staged file went
            assert client.get(f"/api/runs/{full_id}/divergence").json()["rows"] == []

            # Uploads with next to no room: 507 naming the file, nothing stored.
            fill(small_disk, 2 * PAGE)
            refused = client.post_model(example("regression").path)
            assert refused.status_code == 507, refused.text
            assert refused.json()["detail"].startswith(
                f"no space left on device writing {data_dir.resolve() / 'tmp'}/"
            )
            assert FREE.search(refused.json()["detail"])
            buffer = io.BytesIO()
            np.save(buffer, np.ones((BATCH, 50), np.float32))
            sent = client.post(
                f"/api/models/{model_id}/inputs",
                files={"file": ("inputs.npy", buffer.getvalue())},
            )
            assert sent.status_code == 507, sent.text
            assert "no space left on device writing" in sent.json()["detail"]
            generated = generate(client, model_id, seed=3)
            assert generated.status_code == 507, generated.text
            inputs = re.escape(str(data_dir.resolve() / "inputs"))
            assert re.match(
                rf"no space left on device writing {inputs}/[0-9a-f]{{64}}\.npz ",
                generated.json()["detail"],
            )

            after = snapshot(data_dir)
            assert stored_rows(database_url) == rows_before
            assert {k: v for k, v in after.items() if k in before} == before
            assert set(after) - set(before) == {f"outputs/{full_id}/numpy-f64.npz"}
            assert client.get(f"/api/runs/{earlier_id}").json() == earlier
            assert client.get(f"/api/runs/{earlier_id}/divergence").json() == earlier_rows

            filler.unlink()
            again = client.wait_for_run(start_run(client, model_id, input_set_id))
            assert again["status"] == "done", again
            assert {b["status"] for b in again["backend_runs"]} == {"done"}
            assert len(client.get(f"/api/runs/{again['id']}/divergence").json()["rows"]) == 10
    finally:
        server.stop()
