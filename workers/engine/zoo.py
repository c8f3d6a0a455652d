"""The models people actually ship, built small with fixed seeds: the zoo every backend must
run within rounding.

Twelve `keras.applications` architectures (weights=None, so nothing is downloaded,
at the smallest input each accepts) and four hand-built models for what the
applications lack: a classifier on a nested MobileNetV2 (transfer learning), an
Embedding(mask_zero) + LSTM text classifier fed token ids, a GRU / Bidirectional(LSTM)
sequence model and a Functional graph with keras.ops arithmetic between layers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from workers.engine.inputs import InputRecipe

IMAGE_PIXELS = InputRecipe("uniform", batch=1, seed=0, low=0.0, high=255.0)
# Small, so that token 0 (padding, masked) is frequent in generated ids.
VOCABULARY = 12


@dataclass(frozen=True)
class ZooModel:
    """How to build one zoo model (seeded) and the inputs it is fed."""

    name: str
    build: Callable[[Any], Any]
    inputs: InputRecipe
    fast: bool = False


def application(architecture: str, side: int) -> Callable[[Any], Any]:
    """A keras.applications architecture, seeded, untrained (nothing downloaded), 10 classes."""

    def build(keras: Any) -> Any:
        keras.utils.set_random_seed(0)
        return getattr(keras.applications, architecture)(
            weights=None, input_shape=(side, side, 3), classes=10
        )

    return build


def transfer_classifier(keras: Any) -> Any:
    """The usual transfer-learning model: a headless MobileNetV2 called as one layer."""
    keras.utils.set_random_seed(1)
    base = keras.applications.MobileNetV2(
        weights=None, include_top=False, input_shape=(32, 32, 3), alpha=0.35
    )
    inputs = keras.Input((32, 32, 3), name="image")
    features = base(inputs, training=False)
    pooled = keras.layers.GlobalAveragePooling2D(name="pool")(features)
    outputs = keras.layers.Dense(5, activation="softmax", name="classes")(pooled)
    return keras.Model(inputs, outputs, name="transfer_classifier")


def text_classifier(keras: Any) -> Any:
    """Token 0 is padding: the embedding masks it and the LSTM skips those steps."""
    keras.utils.set_random_seed(2)
    L = keras.layers
    tokens = keras.Input((12,), dtype="int32", name="tokens")
    embedded = L.Embedding(VOCABULARY, 8, mask_zero=True, name="embedding")(tokens)
    encoded = L.LSTM(16, name="lstm")(embedded)
    outputs = L.Dense(3, activation="softmax", name="classes")(encoded)
    return keras.Model(tokens, outputs, name="text_classifier")


def sequence_model(keras: Any) -> Any:
    """GRU in its TF.js-compatible form (reset_after=False) under a Bidirectional LSTM."""
    keras.utils.set_random_seed(3)
    L = keras.layers
    steps = keras.Input((10, 6), name="steps")
    gru = L.GRU(8, return_sequences=True, reset_after=False, name="gru")(steps)
    both = L.Bidirectional(L.LSTM(6), name="bidirectional")(gru)
    return keras.Model(steps, L.Dense(4, name="head")(both), name="sequence_model")


def ops_graph(keras: Any) -> Any:
    """keras.ops applied to tensors between layers, as hand-written graphs do, and one
    layer called twice."""
    keras.utils.set_random_seed(4)
    L, ops = keras.layers, keras.ops
    x = keras.Input((16,), name="x")
    a = L.Dense(12, name="dense_a")(x)
    gated = ops.tanh(a) * 0.5 + 1.0
    shared = L.Dense(12, name="shared")
    b = shared(shared(gated))
    mixed = ops.maximum(a, b) - 0.25
    return keras.Model(x, L.Dense(4, name="head")(mixed), name="ops_graph")


ZOO: dict[str, ZooModel] = {
    model.name: model
    for model in (
        ZooModel("MobileNetV2", application("MobileNetV2", 32), IMAGE_PIXELS),
        ZooModel("MobileNetV3Small", application("MobileNetV3Small", 32), IMAGE_PIXELS, True),
        ZooModel("MobileNetV3Large", application("MobileNetV3Large", 32), IMAGE_PIXELS),
        ZooModel("EfficientNetB0", application("EfficientNetB0", 32), IMAGE_PIXELS),
        ZooModel("EfficientNetV2B0", application("EfficientNetV2B0", 32), IMAGE_PIXELS),
        ZooModel("ResNet50", application("ResNet50", 32), IMAGE_PIXELS),
        ZooModel("DenseNet121", application("DenseNet121", 32), IMAGE_PIXELS),
        ZooModel("NASNetMobile", application("NASNetMobile", 32), IMAGE_PIXELS),
        ZooModel("Xception", application("Xception", 71), IMAGE_PIXELS),
        ZooModel("InceptionV3", application("InceptionV3", 75), IMAGE_PIXELS),
        ZooModel("VGG16", application("VGG16", 32), IMAGE_PIXELS),
        ZooModel("ConvNeXtTiny", application("ConvNeXtTiny", 32), IMAGE_PIXELS),
        ZooModel("transfer_classifier", transfer_classifier, IMAGE_PIXELS, True),
        ZooModel(
            "text_classifier",
            text_classifier,
            InputRecipe("randint", batch=2, seed=0, low=0, high=VOCABULARY),
            True,
        ),
        ZooModel("sequence_model", sequence_model, InputRecipe("normal", batch=2, seed=0), True),
        ZooModel("ops_graph", ops_graph, InputRecipe("normal", batch=2, seed=0), True),
    )
}
