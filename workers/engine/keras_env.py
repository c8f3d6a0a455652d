"""The one place this process imports Keras.

Keras picks its backend once per process, at import, and TensorFlow reads
TF_ENABLE_ONEDNN_OPTS once, at import. Both are therefore fixed here, before the
first import, and recorded by the runners rather than guessed afterwards.
"""

import os
from functools import cache
from types import ModuleType

_ONEDNN_ENV = {"on": "1", "off": "0"}


@cache
def import_keras(onednn: str = "default") -> ModuleType:
    """Import Keras 3 on TensorFlow with GPUs hidden (keras-gpu runs in its own process).

    `onednn` ('on', 'off' or 'default': TensorFlow's own choice) counts only on the
    process's first import, so a job process passes it when it warms up.
    """
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if onednn in _ONEDNN_ENV:
        os.environ["TF_ENABLE_ONEDNN_OPTS"] = _ONEDNN_ENV[onednn]
    import tensorflow as tf

    tf.config.set_visible_devices([], "GPU")
    import keras

    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(
            f"Keras was already imported with backend {keras.backend.backend()!r}; "
            "keras-cpu needs the tensorflow backend (unset KERAS_BACKEND)"
        )
    return keras


def onednn_enabled() -> bool:
    """Whether TensorFlow's oneDNN kernels are active (default on Intel, off on AMD CPUs)."""
    import_keras()
    from tensorflow.python.util import _pywrap_util_port

    return bool(_pywrap_util_port.IsMklEnabled())
