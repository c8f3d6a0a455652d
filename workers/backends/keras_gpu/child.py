"""The Keras child process: Keras on the chosen framework, on a GPU (keras-gpu) or on
JAX on the CPU (keras-jax), one request at a time.

Keras picks its backend once per process, at import; the process serving the other
runners uses TensorFlow with GPUs hidden, so work on another framework happens here,
in a process started with KERAS_BACKEND set. The precision mode is fixed before the first
operation and read back afterwards, so the record says what was in force.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import shutil
import subprocess
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from workers.backends.keras_gpu.shared_outputs import send_arrays
from workers.engine.options import EngineOptions
from workers.processes.lifetime import die_with_parent

FRAMEWORKS = ("tensorflow", "jax", "torch")


class NoGpu(Exception):
    """Why keras-gpu cannot run here; the runner reports it as 'skipped'."""


def installed(framework: str) -> bool:
    return importlib.util.find_spec(framework) is not None


def gpu_name(framework: str) -> str | None:
    """The first GPU the framework sees, or None."""
    if framework == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if not gpus:
            return None
        return tf.config.experimental.get_device_details(gpus[0]).get("device_name", gpus[0].name)
    if framework == "jax":
        import jax

        devices = [d for d in jax.devices() if d.platform == "gpu"]
        return devices[0].device_kind if devices else None
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def choose_framework(preference: str, allow_cpu: bool) -> tuple[str, str]:
    """(framework, device description) or NoGpu with the reason."""
    candidates = FRAMEWORKS if preference == "auto" else (preference,)
    present = [f for f in candidates if installed(f)]
    if not present:
        raise NoGpu(f"{' / '.join(candidates)} is not installed")
    for framework in present:
        name = gpu_name(framework)
        if name is not None:
            return framework, name
    if allow_cpu:
        return present[0], f"CPU ({platform.processor() or platform.machine()}), test mode"
    raise NoGpu(f"no GPU visible to {', '.join(present)}")


def set_precision(framework: str, fp32: bool) -> dict[str, Any]:
    """With fp32, switch off TF32 and other reduced-precision matmul paths; record the state."""
    if framework == "tensorflow":
        import tensorflow as tf

        if fp32:
            tf.config.experimental.enable_tensor_float_32_execution(False)
        return {"tf32_enabled": tf.config.experimental.tensor_float_32_execution_enabled()}
    if framework == "jax":
        import jax

        if fp32:
            jax.config.update("jax_default_matmul_precision", "highest")
        return {"jax_default_matmul_precision": str(jax.config.jax_default_matmul_precision)}
    import torch

    if fp32:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.set_float32_matmul_precision("highest")
    return {
        "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
    }


def versions(framework: str) -> dict[str, Any]:
    record: dict[str, Any] = {}
    if framework == "tensorflow":
        import tensorflow as tf

        build = tf.sysconfig.get_build_info()
        record = {
            "tensorflow": tf.__version__,
            "cuda": build.get("cuda_version"),
            "cudnn": build.get("cudnn_version"),
        }
    elif framework == "jax":
        import jax

        record = {"jax": jax.__version__}
    else:
        import torch

        record = {
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(),
        }
    if shutil.which("nvidia-smi"):
        query = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        record["driver"] = query.stdout.strip().splitlines()[0] if query.stdout.strip() else None
    return record


def serve(
    connection: Connection,
    options: EngineOptions,
    fp32: bool,
    parent_pid: int,
    cpu_framework: str | None = None,
) -> None:
    """Child main: announce the environment, then answer capture requests until None.
    With `cpu_framework` (keras-jax) that framework runs on the CPU by design."""
    die_with_parent(parent_pid)
    if cpu_framework is not None:
        framework = cpu_framework
        device = f"CPU ({platform.processor() or platform.machine()})"
        os.environ["JAX_PLATFORMS"] = "cpu"
    else:
        try:
            framework, device = choose_framework(
                options.gpu_framework, options.gpu_allow_cpu_for_tests
            )
        except NoGpu as reason:
            connection.send({"unavailable": str(reason)})
            return
    os.environ["KERAS_BACKEND"] = framework
    precision = set_precision(framework, fp32)
    import keras

    from workers.engine.loading import load_keras_model
    from workers.engine.unroll import capture_model

    connection.send(
        {
            "environment": {
                "framework": framework,
                "keras": keras.__version__,
                "device": device,
                "precision": "fp32 (TF32 off)" if fp32 else "framework default",
                **({"cpu": platform.machine()} if cpu_framework else {}),
                **precision,
                **versions(framework),
            }
        }
    )
    models: dict[str, Any] = {}
    while (request := connection.recv()) is not None:
        mode, path, names, feeds = request
        try:
            if path not in models:
                model = load_keras_model(Path(path), keras, options)
                models.clear()
                models[path] = capture_model(keras, model)
            capture = models[path]
            if mode == "accumulated":
                outputs = capture.model.predict(feeds if len(feeds) > 1 else feeds[0], verbose=0)
                outputs = outputs if isinstance(outputs, list) else [outputs]
                by_name = dict(zip(capture.names, outputs, strict=True))
                outputs = [by_name[name] for name in names]
            else:
                outputs = []
                for name, layer_feed in zip(names, feeds, strict=True):
                    tensors = [keras.ops.convert_to_tensor(x) for x in layer_feed]
                    result = capture.call(name, tensors)
                    outputs.append(keras.ops.convert_to_numpy(result))
            send_arrays(connection, outputs, parent_pid)
        except Exception as error:  # reported to the parent, which keeps other jobs going
            connection.send({"error": f"{type(error).__name__}: {error}"})
