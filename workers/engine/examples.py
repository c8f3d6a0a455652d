"""The example models, each built with fixed seeds so every machine gets the same weights.

`dense10x50` is the classic report "the error grows through a ten-layer dense
stack": every kernel and bias drawn from RandomUniform(-1, 1, seed=123), linear.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from workers.engine.keras_env import import_keras


def _seeded(keras: Any, seed: int) -> dict[str, Any]:
    return {
        "kernel_initializer": keras.initializers.GlorotUniform(seed=seed),
        "bias_initializer": keras.initializers.RandomUniform(-0.05, 0.05, seed=seed + 1000),
    }


def dense10x50(keras: Any) -> Any:
    uniform = keras.initializers.RandomUniform(-1.0, 1.0, seed=123)
    layers = [keras.Input((50,), name="input")]
    layers += [
        keras.layers.Dense(
            50, kernel_initializer=uniform, bias_initializer=uniform, name=f"dense_{i}"
        )
        for i in range(1, 11)
    ]
    return keras.Sequential(layers, name="dense10x50")


def autoencoder(keras: Any) -> Any:
    L = keras.layers
    stack: list[Any] = [keras.Input((784,), name="input")]
    for i, (units, activation) in enumerate(
        [(128, "relu"), (64, "relu"), (2, "tanh"), (64, "relu"), (128, "relu"), (784, "tanh")]
    ):
        stack += [
            L.Dense(units, name=f"dense_{i + 1}", **_seeded(keras, 10 + i)),
            L.Activation(activation, name=f"{activation}_{i + 1}"),
        ]
    return keras.Sequential(stack, name="autoencoder")


def regression(keras: Any) -> Any:
    L = keras.layers
    return keras.Sequential(
        [
            keras.Input((4,), name="input"),
            L.Dense(20, activation="relu", name="dense_1", **_seeded(keras, 20)),
            L.Dense(10, activation="relu", name="dense_2", **_seeded(keras, 21)),
            L.Dense(1, name="dense_3", **_seeded(keras, 22)),
        ],
        name="regression",
    )


def conv3x3(keras: Any) -> Any:
    L = keras.layers
    return keras.Sequential(
        [
            keras.Input((64, 64, 1), name="input"),
            L.Conv2D(32, 3, padding="same", name="conv2d", **_seeded(keras, 30)),
            L.ReLU(name="relu"),
        ],
        name="conv3x3",
    )


def cifar_cnn(keras: Any) -> Any:
    L = keras.layers
    return keras.Sequential(
        [
            keras.Input((32, 32, 3), name="input"),
            L.Conv2D(
                32, 3, padding="same", activation="relu", name="conv2d_1", **_seeded(keras, 40)
            ),
            L.Conv2D(32, 3, activation="relu", name="conv2d_2", **_seeded(keras, 41)),
            L.MaxPooling2D(2, name="max_pooling2d_1"),
            L.Dropout(0.25, name="dropout_1"),
            L.Conv2D(
                64, 3, padding="same", activation="relu", name="conv2d_3", **_seeded(keras, 42)
            ),
            L.Conv2D(64, 3, activation="relu", name="conv2d_4", **_seeded(keras, 43)),
            L.MaxPooling2D(2, name="max_pooling2d_2"),
            L.Dropout(0.25, name="dropout_2"),
            L.Flatten(name="flatten"),
            L.Dense(512, activation="relu", name="dense_1", **_seeded(keras, 44)),
            L.Dropout(0.5, name="dropout_3"),
            L.Dense(10, activation="softmax", name="dense_2", **_seeded(keras, 45)),
        ],
        name="cifar_cnn",
    )


EXAMPLES: dict[str, Callable[[Any], Any]] = {
    "dense10x50": dense10x50,
    "autoencoder": autoencoder,
    "regression": regression,
    "conv3x3": conv3x3,
    "cifar_cnn": cifar_cnn,
}


def write_example(name: str, directory: Path) -> Path:
    """Build one example and save it as `<directory>/<name>.keras`; returns the path."""
    if name not in EXAMPLES:
        raise KeyError(f"unknown example {name!r}; examples: {', '.join(EXAMPLES)}")
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.keras"
    EXAMPLES[name](import_keras()).save(path)
    return path


def write_examples(directory: Path) -> list[Path]:
    return [write_example(name, directory) for name in EXAMPLES]
