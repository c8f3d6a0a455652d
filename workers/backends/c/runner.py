"""`c` and `c-fastmath`: the model's generated C port (workers/backends/c/program.py),
compiled by the system C compiler and run as a separate process.

`c` is compiled as a careful port is shipped, `-O2 -ffp-contract=off` (no fused
multiply-adds, IEEE order kept), `c-fastmath` as keras2c's tests and many embedded
builds are, `-O3 -ffast-math -march=native` (reordered sums, FMA, approximations):
the difference between the two is what the compiler's arithmetic does to the port.
A build is kept per model and flags while the runner's process lives; the compile and
every run happen in temporary directories under time limits, and a compiler error
or a time-out fails the backend with the compiler's own message.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from functools import cache
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from workers.backends.base import (
    BackendFailed,
    BackendUnsupported,
    LayerInputs,
    LayerOutputs,
    Runner,
    split_values,
)
from workers.backends.c.program import generate, port_problem
from workers.engine.graph import ModelGraph
from workers.engine.loading import ModelArtifact
from workers.engine.options import EngineOptions

MESSAGE_CHARS = 2000  # of a compiler's or the program's error output kept in the reason
INSTALL_HINT = "install one with `apt-get install -y gcc` (`make install` does this)"


@cache
def compiler_version(compiler: str) -> str:
    """The first line `cc --version` prints (which compiler `cc` is, and its version)."""
    try:
        done = subprocess.run(
            [compiler, "--version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"unknown ({error})"
    return (done.stdout.splitlines() or ["unknown"])[0]


@cache
def native_target(compiler: str) -> str:
    """What `-march=native` means on this machine (gcc's answer), for the record."""
    try:
        done = subprocess.run(
            [compiler, "-march=native", "-Q", "--help=target"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"unknown ({error})"
    for line in done.stdout.splitlines():
        if line.strip().startswith("-march="):
            return line.split()[-1]
    return "unknown"


class TimedOut(Exception):
    """A compile or run past its limit; its whole process group was killed."""


def run_limited(command: list[str], cwd: str, timeout_s: float) -> subprocess.CompletedProcess[str]:
    """`command` in a process group of its own, killed whole past `timeout_s` (gcc's
    cc1 and as are children of the driver: killing the driver alone leaves them)."""
    process = subprocess.Popen(
        command,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise TimedOut from None
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def write_float32(path: Path, tensors: list[np.ndarray]) -> None:
    """The program's inputs file: each tensor's values as little-endian float32, in order."""
    with path.open("wb") as file:
        for tensor in tensors:
            file.write(np.ascontiguousarray(tensor, "<f4").tobytes())


def _tail(text: str) -> str:
    text = text.strip()
    return text if len(text) <= MESSAGE_CHARS else "…" + text[-MESSAGE_CHARS:]


class Builds:
    """The compiled ports of one process, per model and flags, in a private directory."""

    def __init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="driftbench-c-"))
        self._lock = threading.Lock()
        self._built: dict[str, tuple[Path, float, int]] = {}
        self._failed: dict[str, str] = {}  # a build that failed fails the same way again

    def binary(
        self, graph: ModelGraph, key: str, command: list[str], timeout_s: float
    ) -> tuple[Path, float, int]:
        """(the program, seconds its compile took, source bytes), compiled on first use."""
        with self._lock:
            if key in self._built:
                return self._built[key]
            if key in self._failed:
                raise BackendFailed(self._failed[key])
            try:
                self._built[key] = self._compile(graph, key, command, timeout_s)
            except BackendFailed as error:
                self._failed[key] = str(error)
                raise
            return self._built[key]

    def _compile(
        self, graph: ModelGraph, key: str, command: list[str], timeout_s: float
    ) -> tuple[Path, float, int]:
        source = generate(graph).source
        with tempfile.TemporaryDirectory(dir=self.directory) as scratch:
            (Path(scratch) / "port.c").write_text(source)
            started = time.perf_counter()
            try:
                done = run_limited([*command, "-o", "port", "port.c", "-lm"], scratch, timeout_s)
            except TimedOut:
                raise BackendFailed(
                    f"the C compiler did not finish within {timeout_s:g} s"
                ) from None
            if done.returncode != 0:
                raise BackendFailed(
                    f"the C compiler failed (exit {done.returncode}): {_tail(done.stderr)}"
                )
            binary = self.directory / f"port-{key}"
            shutil.move(Path(scratch) / "port", binary)
        return binary, time.perf_counter() - started, len(source)

    def close(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


class CRunner(Runner):
    BACKEND: ClassVar[str] = "c"
    FLAGS: ClassVar[tuple[str, ...]] = ("-std=c99", "-O2", "-ffp-contract=off")

    @classmethod
    def availability(cls, options: EngineOptions) -> str | None:
        if shutil.which(options.c_compiler) is None:
            return f"no C compiler {options.c_compiler!r} found; {INSTALL_HINT}"
        return None

    @classmethod
    def versions(cls) -> dict[str, str]:
        return {"cc": compiler_version("cc")} if shutil.which("cc") else {}

    def activate_impl(self) -> None:
        self.builds: Builds = self.shared.get("c-builds", Builds, Builds.close)
        self._environment: dict[str, Any] = {}

    def unsupported_reason(self, graph: ModelGraph) -> str | None:
        return port_problem(graph)

    def program(self, model: ModelArtifact) -> Path:
        """The model's compiled port, built once per model and compiler command."""
        compiler = self.options.c_compiler
        command = [compiler, *self.FLAGS]
        key = hashlib.sha256(f"{model.sha256} {' '.join(command)}".encode()).hexdigest()[:16]
        binary, compile_s, source_bytes = self.builds.binary(
            model.graph, key, command, self.options.c_compile_timeout_s
        )
        self._environment |= {
            "compiler": shutil.which(compiler) or compiler,
            "compiler_version": compiler_version(compiler),
            "flags": " ".join(self.FLAGS),
            # What the port's arithmetic also depends on: libm (expf, erff, tanhf) and,
            # for -march=native, the CPU.
            "libc": " ".join(platform.libc_ver()).strip() or "unknown",
            "machine": platform.machine(),
            **({"march_native": native_target(compiler)} if "-march=native" in self.FLAGS else {}),
            "compile_s": round(compile_s, 3),  # when the build was made (kept for later jobs)
            "source_bytes": source_bytes,
        }
        return binary

    def _execute(
        self, model: ModelArtifact, mode: str, samples: int, tensors: list[np.ndarray]
    ) -> LayerOutputs:
        """Run the program on these inputs (each tensor's samples in a row); every
        layer's output back."""
        binary = self.program(model)
        layers = model.graph.compute_layers
        with tempfile.TemporaryDirectory(prefix="driftbench-c-job-") as scratch:
            inputs, outputs = Path(scratch) / "inputs.f32", Path(scratch) / "outputs.f32"
            write_float32(inputs, tensors)
            started = time.perf_counter()
            limit_s = self.options.c_run_timeout_s
            try:
                done = run_limited(
                    [str(binary), mode, str(samples), str(inputs), str(outputs)], scratch, limit_s
                )
            except TimedOut:
                raise BackendFailed(
                    f"the compiled port did not finish within {limit_s:g} s "
                    "(DRIFTBENCH_C_RUN_TIMEOUT_S)"
                ) from None
            if done.returncode != 0:
                raise BackendFailed(
                    f"the compiled port failed (exit {done.returncode}): {_tail(done.stderr)}"
                )
            self._environment[f"{mode}_run_s"] = round(time.perf_counter() - started, 4)
            values = np.fromfile(outputs, dtype="<f4")
        shapes = [(samples, *(int(d) for d in layer.output_shape[1:])) for layer in layers]
        try:
            arrays = split_values(values, shapes)
        except ValueError as error:
            raise BackendFailed(f"the compiled port's outputs: {error}") from None
        return dict(zip([layer.name for layer in layers], arrays, strict=True))

    def run_impl(self, model: ModelArtifact, inputs: dict[str, np.ndarray]) -> LayerOutputs:
        self._environment = {}  # a job starts with its accumulated run
        tensors = [inputs[layer.name] for layer in model.graph.inputs]
        for layer, tensor in zip(model.graph.inputs, tensors, strict=True):
            if tensor.dtype.kind != "f":
                raise BackendUnsupported(
                    f"unsupported: {layer.name} (InputLayer) {tensor.dtype} inputs"
                )
        return self._execute(model, "accumulated", len(tensors[0]), tensors)

    def run_isolated_impl(self, model: ModelArtifact, layer_inputs: LayerInputs) -> LayerOutputs:
        tensors = [x for layer in model.graph.compute_layers for x in layer_inputs[layer.name]]
        return self._execute(model, "isolated", len(tensors[0]), tensors)

    def environment(self) -> dict[str, Any]:
        return dict(self._environment)


class CFastmathRunner(CRunner):
    BACKEND: ClassVar[str] = "c-fastmath"
    FLAGS: ClassVar[tuple[str, ...]] = ("-std=c99", "-O3", "-ffast-math", "-march=native")
