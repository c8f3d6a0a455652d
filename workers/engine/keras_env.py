"""The one place this process imports Keras.

Keras picks its backend once per process, at import, and TensorFlow reads
TF_ENABLE_ONEDNN_OPTS once, at import. Both are therefore fixed here, before the
first import, and recorded by the runners rather than guessed afterwards.
"""

import os
from functools import cache
from types import ModuleType

_ONEDNN_ENV = {"on": "1", "off": "0"}


def import_keras(onednn: str = "default") -> ModuleType:
    """Import Keras 3 on TensorFlow with GPUs hidden (keras-gpu runs in its own process).

    `onednn` is 'on', 'off' or 'default' (whatever the process already has: TensorFlow's
    own choice if it was never set). It takes effect only before TensorFlow's first
    import, so asking for 'on' or 'off' once TensorFlow runs the other way fails loudly
    instead of recording a setting that is not the one in use.
    """
    wanted = _ONEDNN_ENV.get(onednn)
    if _keras.cache_info().currsize == 0:
        if wanted is not None:
            os.environ["TF_ENABLE_ONEDNN_OPTS"] = wanted
    elif wanted is not None and os.environ.get("TF_ENABLE_ONEDNN_OPTS") != wanted:
        raise RuntimeError(
            f"TensorFlow is already imported in this process without oneDNN {onednn}; "
            "set DRIFTBENCH_ONEDNN before its first import"
        )
    return _keras()


@cache
def _keras() -> ModuleType:
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
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
