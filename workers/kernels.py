"""Every compiled (numba) kernel a job process runs, the comparison's and the diagnosis's,
behind one call: `make install`, the images' build and each job process's warm-up all
name this one, so a kernel added later is warmed everywhere at once."""

from __future__ import annotations

from workers.diagnosis.envelope import load_kernels as load_envelope_kernels
from workers.engine.metrics import load_kernels as load_metric_kernels


def load_kernels() -> None:
    """Compile them into numba's cache next to their modules, or load them from it."""
    load_metric_kernels()
    load_envelope_kernels()
