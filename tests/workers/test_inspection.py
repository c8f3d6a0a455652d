"""Uploads are parsed in a child process; the same bytes uploaded at once are parsed once."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from workers.inspection import InspectionFailed, ModelInspector


@pytest.fixture(scope="module")
def inspector() -> Iterator[ModelInspector]:
    inspector = ModelInspector()
    yield inspector
    inspector.close()


def inspect_together(inspector: ModelInspector, jobs: list[tuple[Path, str]]) -> list[Any]:
    """Start every inspection at the same moment; each result or the error it raised."""
    results: list[Any] = [None] * len(jobs)
    start = threading.Barrier(len(jobs))

    def inspect(index: int, path: Path, key: str) -> None:
        start.wait()
        try:
            results[index] = inspector.inspect(path, 120, key=key)
        except InspectionFailed as error:
            results[index] = error

    threads = [
        threading.Thread(target=inspect, args=(i, path, key)) for i, (path, key) in enumerate(jobs)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    return results


def test_same_bytes_at_once_are_parsed_once(
    inspector: ModelInspector, example: Any, tmp_path: Path
) -> None:
    copies = []
    for index in range(4):
        copies.append(tmp_path / f"copy{index}.keras")
        shutil.copyfile(example("conv3x3").path, copies[-1])
    other = example("regression").path
    before = inspector.parses
    results = inspect_together(
        inspector, [(path, "same-sha") for path in copies] + [(other, "other-sha")]
    )
    assert inspector.parses - before == 2
    assert all(result == results[0] for result in results[:4])
    assert [layer["class_name"] for layer in results[0]["layers"]][1] == "Conv2D"
    assert [layer["class_name"] for layer in results[4]["layers"]][1] == "Dense"


def test_a_shared_refusal_reaches_every_caller(inspector: ModelInspector, tmp_path: Path) -> None:
    broken = tmp_path / "broken.keras"
    broken.write_bytes(b"PK\x03\x04" + bytes(100))
    results = inspect_together(inspector, [(broken, "broken-sha")] * 3)
    assert all(isinstance(result, InspectionFailed) for result in results)
    assert all("unreadable keras model file" in str(result) for result in results)
    parsed = inspector.parses
    with pytest.raises(InspectionFailed):  # nothing left in flight: a later upload parses again
        inspector.inspect(broken, 120, key="broken-sha")
    assert inspector.parses == parsed + 1


def test_closing_ends_the_parsers_threads_before_it_returns(example: Any) -> None:
    """The parser pool's threads are gone once `close` returns: one still ending at the
    interpreter's exit raced Python 3.11's exit hook for its wakeup pipe ("OSError: [Errno
    9] Bad file descriptor" printed as `make demo` exited)."""
    before = set(threading.enumerate())
    inspector = ModelInspector()
    assert inspector.inspect(example("regression").path, 120, key="regression")["layers"]
    started = [thread for thread in threading.enumerate() if thread not in before]
    assert started  # the pool's manager thread at least
    inspector.close()
    assert [thread.name for thread in started if thread.is_alive()] == []
