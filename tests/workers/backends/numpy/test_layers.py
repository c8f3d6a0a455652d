"""Every supported layer class, in several configurations: keras-cpu and our float32
numpy port must both stay within float32 rounding of the float64 port, accumulated
and isolated. A wrong formula, padding rule or weight layout shows up as a mismatch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from tests.support import randomize_weights
from workers.backends.execution import run_locally
from workers.backends.numpy import layers
from workers.backends.numpy.activations import ACTIVATIONS, gelu
from workers.backends.numpy.layers import LayerConfigUnsupported
from workers.backends.numpy.port import LAYERS, SUPPORTED_LAYERS
from workers.backends.pool import RunnerPool
from workers.engine.compare import compare
from workers.engine.graph import OPERATION_PREFIX
from workers.engine.inputs import InputRecipe, generate_inputs
from workers.engine.keras_env import onednn_enabled
from workers.engine.metrics import VerdictThresholds
from workers.engine.options import EngineOptions
from workers.engine.results import MODES

WITHIN_ROUNDING = {"identical", "rounding"}
Builder = Callable[[Any], Any]


def single(shape: tuple[int, ...], make_layer: Callable[[Any], Any]) -> Builder:
    def build(keras: Any) -> Any:
        return keras.Sequential([keras.Input(shape), make_layer(keras.layers)])

    return build


def called(shapes: list[tuple[int, ...]], call: Callable[[Any, list[Any]], Any]) -> Builder:
    """A layer called on the model's inputs as `call(keras.layers, inputs)` calls it."""

    def build(keras: Any) -> Any:
        inputs = [keras.Input(shape) for shape in shapes]
        return keras.Model(inputs, call(keras.layers, inputs))

    return build


def layer_scale(keras: Any) -> Any:
    """ConvNeXt's LayerScale, which keras.applications defines outside keras.layers."""
    from keras.src.applications.convnext import LayerScale

    return keras.Sequential([keras.Input((4, 4, 3)), LayerScale(0.1, 3)])


def merge(make_merge: Callable[[Any], Any], branches: int = 2) -> Builder:
    def build(keras: Any) -> Any:
        inp = keras.Input((6,))
        parts = [keras.layers.Dense(4, name=f"branch_{i}")(inp) for i in range(branches)]
        return keras.Model(inp, make_merge(keras.layers)(parts))

    return build


CASES: dict[str, Builder] = {
    "Dense-relu": single((6,), lambda L: L.Dense(5, activation="relu")),
    "Dense-3d-nobias": single((4, 6), lambda L: L.Dense(3, use_bias=False)),
    "ReLU-default": single((8,), lambda L: L.ReLU()),
    "ReLU-max-slope-threshold": single(
        (8,), lambda L: L.ReLU(max_value=1.5, negative_slope=0.1, threshold=0.25)
    ),
    "LeakyReLU-default": single((8,), lambda L: L.LeakyReLU()),
    "LeakyReLU-0.01": single((8,), lambda L: L.LeakyReLU(negative_slope=0.01)),
    "ELU-1": single((8,), lambda L: L.ELU()),
    "ELU-0.5": single((8,), lambda L: L.ELU(alpha=0.5)),
    "Softmax-last": single((8,), lambda L: L.Softmax()),
    "Softmax-axis1": single((3, 5), lambda L: L.Softmax(axis=1)),
    "PReLU": single((8,), lambda L: L.PReLU()),
    "PReLU-shared": single((4, 4, 3), lambda L: L.PReLU(shared_axes=[1, 2])),
    "Rescaling": single((4, 4, 3), lambda L: L.Rescaling(1 / 255, offset=-0.5)),
    "Rescaling-per-channel": single(
        (4, 4, 3), lambda L: L.Rescaling([0.5, 2.0, -1.0], offset=[0.1, 0.0, 0.2])
    ),
    "Normalization-weights": single((4, 4, 3), lambda L: L.Normalization(axis=-1)),
    "Normalization-given-zero-variance": single(
        (4, 4, 3), lambda L: L.Normalization(mean=[0.5, -1.0, 2.0], variance=[4.0, 0.25, 0.0])
    ),
    "Normalization-axis1-invert": single(
        (5, 3),
        lambda L: L.Normalization(
            axis=1, mean=[1, 2, 3, 4, 5], variance=[1, 4, 9, 2, 3], invert=True
        ),
    ),
    "SimpleRNN": single((6, 3), lambda L: L.SimpleRNN(4)),
    "SimpleRNN-sequences-backwards-relu": single(
        (6, 3),
        lambda L: L.SimpleRNN(4, activation="relu", return_sequences=True, go_backwards=True),
    ),
    "LSTM": single((6, 3), lambda L: L.LSTM(4)),
    "LSTM-sequences-nobias": single(
        (6, 3), lambda L: L.LSTM(5, return_sequences=True, use_bias=False)
    ),
    "LSTM-backwards-hard-sigmoid": single(
        (6, 3), lambda L: L.LSTM(4, go_backwards=True, recurrent_activation="hard_sigmoid")
    ),
    "GRU": single((6, 3), lambda L: L.GRU(4)),
    "GRU-reset-before-sequences": single(
        (6, 3), lambda L: L.GRU(4, reset_after=False, return_sequences=True)
    ),
    "GRU-nobias-backwards": single((6, 3), lambda L: L.GRU(3, use_bias=False, go_backwards=True)),
    "Bidirectional": single((6, 3), lambda L: L.Bidirectional(L.LSTM(4))),
    "Bidirectional-sequences-sum": single(
        (6, 3), lambda L: L.Bidirectional(L.GRU(4, return_sequences=True), merge_mode="sum")
    ),
    "Bidirectional-ave-own-backward": single(
        (6, 3),
        lambda L: L.Bidirectional(
            L.LSTM(3, return_sequences=True),
            backward_layer=L.SimpleRNN(3, return_sequences=True, go_backwards=True),
            merge_mode="ave",
        ),
    ),
    "Bidirectional-mul": single(
        (6, 3), lambda L: L.Bidirectional(L.SimpleRNN(3), merge_mode="mul")
    ),
    "Dropout": single((8,), lambda L: L.Dropout(0.5)),
    "SpatialDropout1D": single((5, 4), lambda L: L.SpatialDropout1D(0.5)),
    "SpatialDropout2D": single((4, 4, 3), lambda L: L.SpatialDropout2D(0.5)),
    "SpatialDropout3D": single((3, 3, 3, 2), lambda L: L.SpatialDropout3D(0.5)),
    "GaussianNoise": single((8,), lambda L: L.GaussianNoise(1.0)),
    "GaussianDropout": single((8,), lambda L: L.GaussianDropout(0.3)),
    "AlphaDropout": single((8,), lambda L: L.AlphaDropout(0.3)),
    "ActivityRegularization": single((8,), lambda L: L.ActivityRegularization(l1=0.1)),
    "Identity": single((8,), lambda L: L.Identity()),
    "Flatten": single((3, 4, 2), lambda L: L.Flatten()),
    "Flatten-channels-first": single((3, 4, 2), lambda L: L.Flatten(data_format="channels_first")),
    "Reshape": single((4, 6), lambda L: L.Reshape((3, 8))),
    "Reshape-infer": single((4, 6), lambda L: L.Reshape((-1, 2))),
    "Permute": single((2, 3, 4), lambda L: L.Permute((3, 1, 2))),
    "Conv1D-valid": single((9, 3), lambda L: L.Conv1D(4, 3)),
    "Conv1D-same-stride": single((9, 3), lambda L: L.Conv1D(4, 3, strides=2, padding="same")),
    "Conv1D-causal-dilated": single(
        (9, 3), lambda L: L.Conv1D(4, 3, padding="causal", dilation_rate=2)
    ),
    "Conv1D-groups": single((8, 4), lambda L: L.Conv1D(6, 2, groups=2, activation="tanh")),
    "Conv1D-channels-first": single((3, 9), lambda L: L.Conv1D(4, 3, data_format="channels_first")),
    "Conv2D-valid": single((7, 7, 2), lambda L: L.Conv2D(4, 3)),
    "Conv2D-same-stride-odd": single(
        (7, 8, 2), lambda L: L.Conv2D(3, 4, strides=2, padding="same")
    ),
    "Conv2D-dilated": single((9, 9, 2), lambda L: L.Conv2D(3, 3, dilation_rate=2, padding="same")),
    "Conv2D-groups": single((6, 6, 4), lambda L: L.Conv2D(6, (3, 2), groups=2, use_bias=False)),
    "Conv2D-channels-first": single(
        (2, 7, 6), lambda L: L.Conv2D(3, 3, padding="same", data_format="channels_first")
    ),
    "Conv3D-valid": single((5, 6, 5, 2), lambda L: L.Conv3D(3, 2)),
    "Conv3D-same-stride-odd": single(
        (5, 6, 5, 2), lambda L: L.Conv3D(3, 3, strides=2, padding="same")
    ),
    "Conv3D-dilated-groups": single(
        (6, 6, 5, 4), lambda L: L.Conv3D(4, 2, dilation_rate=2, groups=2, activation="relu")
    ),
    "Conv3D-channels-first": single(
        (2, 5, 6, 5),
        lambda L: L.Conv3D(3, 3, strides=(1, 2, 1), padding="same", data_format="channels_first"),
    ),
    "Conv3D-channels-first-dilated": single(
        (2, 6, 6, 5), lambda L: L.Conv3D(3, 2, dilation_rate=2, data_format="channels_first")
    ),
    "Conv3D-channels-first-dilated-nobias": single(
        (2, 6, 6, 5),
        lambda L: L.Conv3D(3, 2, dilation_rate=2, use_bias=False, data_format="channels_first"),
    ),
    "DepthwiseConv2D": single((6, 6, 3), lambda L: L.DepthwiseConv2D(3)),
    "DepthwiseConv2D-multiplier-stride": single(
        (7, 7, 3), lambda L: L.DepthwiseConv2D(3, strides=2, padding="same", depth_multiplier=2)
    ),
    "DepthwiseConv2D-channels-first": single(
        (3, 6, 6), lambda L: L.DepthwiseConv2D(2, data_format="channels_first")
    ),
    "SeparableConv2D": single((6, 6, 3), lambda L: L.SeparableConv2D(4, 3, padding="same")),
    "SeparableConv2D-channels-first": single(
        (3, 6, 6), lambda L: L.SeparableConv2D(4, 3, data_format="channels_first")
    ),
    "SeparableConv2D-multiplier-stride": single(
        (7, 7, 2),
        lambda L: L.SeparableConv2D(5, 3, strides=2, depth_multiplier=2, activation="relu"),
    ),
    "Conv2DTranspose-valid-stride2": single(
        (4, 5, 3), lambda L: L.Conv2DTranspose(2, 3, strides=2)
    ),
    "Conv2DTranspose-same-stride2": single(
        (4, 5, 3), lambda L: L.Conv2DTranspose(2, 3, strides=2, padding="same")
    ),
    "Conv2DTranspose-same-even-kernel": single(
        (4, 4, 2), lambda L: L.Conv2DTranspose(3, 4, strides=2, padding="same")
    ),
    "Conv2DTranspose-kernel-below-stride": single(
        (3, 3, 2), lambda L: L.Conv2DTranspose(2, 2, strides=3)
    ),
    "Conv2DTranspose-dilated": single(
        (5, 5, 2), lambda L: L.Conv2DTranspose(2, 3, dilation_rate=2, padding="same")
    ),
    "Conv2DTranspose-output-padding": single(
        (4, 4, 2), lambda L: L.Conv2DTranspose(2, 3, strides=2, output_padding=1)
    ),
    "Conv2DTranspose-channels-first": single(
        (2, 4, 4), lambda L: L.Conv2DTranspose(3, 3, strides=2, data_format="channels_first")
    ),
    "Conv1DTranspose-valid-stride2": single((5, 3), lambda L: L.Conv1DTranspose(2, 3, strides=2)),
    "Conv1DTranspose-same-even-kernel": single(
        (5, 3), lambda L: L.Conv1DTranspose(2, 4, strides=2, padding="same")
    ),
    "Conv1DTranspose-output-padding": single(
        (5, 3), lambda L: L.Conv1DTranspose(2, 3, strides=2, output_padding=1)
    ),
    "Conv1DTranspose-dilated": single(
        (5, 3), lambda L: L.Conv1DTranspose(2, 3, dilation_rate=2, padding="same")
    ),
    "Conv1DTranspose-channels-first": single(
        (3, 5), lambda L: L.Conv1DTranspose(2, 3, strides=2, data_format="channels_first")
    ),
    "Conv3DTranspose-valid-stride2": single(
        (3, 4, 3, 2), lambda L: L.Conv3DTranspose(2, 3, strides=2)
    ),
    "Conv3DTranspose-same-mixed-strides": single(
        (3, 4, 3, 2),
        lambda L: L.Conv3DTranspose(2, (2, 3, 3), strides=(1, 2, 2), padding="same"),
    ),
    "Conv3DTranspose-output-padding": single(
        (3, 3, 3, 2), lambda L: L.Conv3DTranspose(2, 3, strides=2, output_padding=(1, 0, 1))
    ),
    "Conv3DTranspose-dilated": single(
        (3, 4, 3, 2), lambda L: L.Conv3DTranspose(2, 2, dilation_rate=2)
    ),
    "Conv3DTranspose-channels-first": single(
        (2, 3, 4, 3), lambda L: L.Conv3DTranspose(2, 2, strides=2, data_format="channels_first")
    ),
    "MaxPooling1D": single((8, 3), lambda L: L.MaxPooling1D(2)),
    "MaxPooling1D-same": single((9, 3), lambda L: L.MaxPooling1D(3, strides=2, padding="same")),
    "MaxPooling2D": single((6, 6, 2), lambda L: L.MaxPooling2D(2)),
    "MaxPooling2D-same-odd": single(
        (7, 5, 2), lambda L: L.MaxPooling2D(3, strides=2, padding="same")
    ),
    "MaxPooling2D-channels-first": single(
        (2, 6, 6), lambda L: L.MaxPooling2D(2, data_format="channels_first")
    ),
    "MaxPooling3D": single((4, 5, 4, 2), lambda L: L.MaxPooling3D(2)),
    "MaxPooling3D-same-odd": single(
        (5, 5, 3, 2), lambda L: L.MaxPooling3D(3, strides=2, padding="same")
    ),
    "MaxPooling3D-channels-first": single(
        (2, 4, 4, 4), lambda L: L.MaxPooling3D((2, 1, 2), data_format="channels_first")
    ),
    "AveragePooling1D": single((8, 3), lambda L: L.AveragePooling1D(2)),
    "AveragePooling1D-same": single(
        (9, 3), lambda L: L.AveragePooling1D(3, strides=2, padding="same")
    ),
    "AveragePooling2D": single((6, 6, 2), lambda L: L.AveragePooling2D(2)),
    "AveragePooling2D-same-odd": single(
        (7, 5, 2), lambda L: L.AveragePooling2D(3, strides=2, padding="same")
    ),
    "AveragePooling2D-channels-first": single(
        (2, 6, 6), lambda L: L.AveragePooling2D(2, data_format="channels_first")
    ),
    "AveragePooling3D": single((4, 4, 4, 2), lambda L: L.AveragePooling3D(2)),
    "AveragePooling3D-same-odd": single(
        (5, 4, 5, 2), lambda L: L.AveragePooling3D(3, strides=2, padding="same")
    ),
    "AveragePooling3D-channels-first": single(
        (2, 4, 4, 4), lambda L: L.AveragePooling3D(2, strides=1, data_format="channels_first")
    ),
    "GlobalAveragePooling1D": single((5, 3), lambda L: L.GlobalAveragePooling1D()),
    "GlobalAveragePooling2D": single((4, 5, 3), lambda L: L.GlobalAveragePooling2D()),
    "GlobalAveragePooling2D-keepdims-cf": single(
        (3, 4, 5), lambda L: L.GlobalAveragePooling2D(data_format="channels_first", keepdims=True)
    ),
    "GlobalAveragePooling3D": single((3, 4, 2, 3), lambda L: L.GlobalAveragePooling3D()),
    "GlobalAveragePooling3D-keepdims-cf": single(
        (3, 3, 4, 2),
        lambda L: L.GlobalAveragePooling3D(data_format="channels_first", keepdims=True),
    ),
    "GlobalMaxPooling1D": single((5, 3), lambda L: L.GlobalMaxPooling1D()),
    "GlobalMaxPooling2D": single((4, 5, 3), lambda L: L.GlobalMaxPooling2D()),
    "GlobalMaxPooling2D-keepdims": single((4, 5, 3), lambda L: L.GlobalMaxPooling2D(keepdims=True)),
    "GlobalMaxPooling3D": single((3, 4, 2, 3), lambda L: L.GlobalMaxPooling3D()),
    "GlobalMaxPooling3D-keepdims": single(
        (3, 4, 2, 3), lambda L: L.GlobalMaxPooling3D(keepdims=True)
    ),
    "BatchNormalization": single((6,), lambda L: L.BatchNormalization()),
    "BatchNormalization-axis1": single((3, 4, 4), lambda L: L.BatchNormalization(axis=1)),
    "BatchNormalization-no-center-scale": single(
        (4, 4, 3), lambda L: L.BatchNormalization(center=False, scale=False, epsilon=1e-5)
    ),
    "LayerNormalization": single((6,), lambda L: L.LayerNormalization()),
    "LayerNormalization-axes": single((3, 4, 2), lambda L: L.LayerNormalization(axis=[1, 2, 3])),
    "LayerNormalization-no-center-scale": single(
        (5, 4), lambda L: L.LayerNormalization(center=False, scale=False)
    ),
    "LayerNormalization-rms": single((6,), lambda L: L.LayerNormalization(rms_scaling=True)),
    "LayerScale": layer_scale,
    "ZeroPadding1D": single((4, 3), lambda L: L.ZeroPadding1D((1, 2))),
    "ZeroPadding1D-channels-first": single(
        (3, 4), lambda L: L.ZeroPadding1D(2, data_format="channels_first")
    ),
    "ZeroPadding3D": single((2, 3, 2, 2), lambda L: L.ZeroPadding3D(((1, 0), (2, 1), (0, 3)))),
    "ZeroPadding3D-channels-first": single(
        (2, 2, 3, 2), lambda L: L.ZeroPadding3D(1, data_format="channels_first")
    ),
    "Cropping1D": single((7, 3), lambda L: L.Cropping1D((1, 2))),
    "Cropping1D-symmetric": single((7, 3), lambda L: L.Cropping1D(2)),
    "Cropping3D": single((5, 6, 7, 2), lambda L: L.Cropping3D(((1, 0), (2, 1), (0, 3)))),
    "Cropping3D-channels-first": single(
        (2, 5, 6, 7), lambda L: L.Cropping3D(1, data_format="channels_first")
    ),
    "UpSampling1D": single((4, 3), lambda L: L.UpSampling1D(3)),
    "UpSampling3D": single((2, 3, 2, 2), lambda L: L.UpSampling3D((1, 2, 3))),
    "UpSampling3D-channels-first": single(
        (2, 2, 3, 2), lambda L: L.UpSampling3D(2, data_format="channels_first")
    ),
    "Resizing-bilinear-up": single((4, 5, 2), lambda L: L.Resizing(7, 9)),
    "Resizing-bilinear-down": single((9, 7, 2), lambda L: L.Resizing(4, 3)),
    "Resizing-nearest-up": single((4, 5, 2), lambda L: L.Resizing(7, 9, interpolation="nearest")),
    "Resizing-nearest-down": single(
        (9, 14, 2), lambda L: L.Resizing(4, 5, interpolation="nearest")
    ),
    "Resizing-crop-to-aspect-ratio": single(
        (6, 9, 2), lambda L: L.Resizing(4, 4, crop_to_aspect_ratio=True)
    ),
    "Resizing-channels-first": single(
        (2, 6, 9), lambda L: L.Resizing(4, 5, data_format="channels_first")
    ),
    "CenterCrop": single((6, 9, 2), lambda L: L.CenterCrop(3, 4)),
    "CenterCrop-larger-target": single((6, 9, 2), lambda L: L.CenterCrop(8, 5)),
    "CenterCrop-channels-first": single(
        (2, 6, 9), lambda L: L.CenterCrop(3, 4, data_format="channels_first")
    ),
    "RepeatVector": single((5,), lambda L: L.RepeatVector(3)),
    "Masking": single((5, 3), lambda L: L.Masking(0.5)),
    "TimeDistributed-Dense": single(
        (4, 5), lambda L: L.TimeDistributed(L.Dense(3, activation="tanh"))
    ),
    "TimeDistributed-Conv2D": single(
        (3, 5, 5, 2), lambda L: L.TimeDistributed(L.Conv2D(3, 2, padding="same"))
    ),
    "TimeDistributed-LSTM": single((3, 4, 2), lambda L: L.TimeDistributed(L.LSTM(3))),
    "TimeDistributed-BatchNormalization": single(
        (4, 5), lambda L: L.TimeDistributed(L.BatchNormalization())
    ),
    "TimeDistributed-nested": single(
        (3, 4, 2), lambda L: L.TimeDistributed(L.TimeDistributed(L.Dense(3)))
    ),
    "Attention-dot": called([(4, 3), (5, 3)], lambda L, x: L.Attention()(x)),
    "Attention-scale-key": called(
        [(4, 3), (5, 3), (5, 3)], lambda L, x: L.Attention(use_scale=True)(x)
    ),
    "Attention-concat": called([(4, 3), (5, 3)], lambda L, x: L.Attention(score_mode="concat")(x)),
    "Attention-concat-scale-key": called(
        [(4, 3), (5, 3), (5, 3)],
        lambda L, x: L.Attention(use_scale=True, score_mode="concat")(x),
    ),
    "AdditiveAttention": called([(4, 3), (5, 3)], lambda L, x: L.AdditiveAttention()(x)),
    "AdditiveAttention-no-scale-key": called(
        [(4, 3), (5, 3), (5, 3)], lambda L, x: L.AdditiveAttention(use_scale=False)(x)
    ),
    "MultiHeadAttention-self": called(
        [(4, 6)], lambda L, x: L.MultiHeadAttention(2, 3)(x[0], x[0])
    ),
    "MultiHeadAttention-cross-key-nobias": called(
        [(4, 6), (5, 7), (5, 3)],
        lambda L, x: L.MultiHeadAttention(2, 3, value_dim=4, use_bias=False)(*x),
    ),
    "Dot-vectors": called([(5,), (5,)], lambda L, x: L.Dot(axes=1)(x)),
    "Dot-vectors-normalize": called([(5,), (5,)], lambda L, x: L.Dot(axes=-1, normalize=True)(x)),
    "Dot-sequences": called([(4, 5), (6, 5)], lambda L, x: L.Dot(axes=(2, 2))(x)),
    "Dot-time-axis-normalize": called(
        [(4, 5), (4, 6)], lambda L, x: L.Dot(axes=1, normalize=True)(x)
    ),
    "Dot-vector-sequence": called([(4,), (4, 6)], lambda L, x: L.Dot(axes=(1, 1))(x)),
    "ZeroPadding2D": single((3, 4, 2), lambda L: L.ZeroPadding2D(1)),
    "ZeroPadding2D-asymmetric-cf": single(
        (2, 3, 4), lambda L: L.ZeroPadding2D(((1, 2), (0, 3)), data_format="channels_first")
    ),
    "Cropping2D": single((6, 7, 2), lambda L: L.Cropping2D(((1, 0), (2, 1)))),
    "Cropping2D-channels-first": single(
        (2, 6, 7), lambda L: L.Cropping2D(1, data_format="channels_first")
    ),
    "UpSampling2D-nearest": single((3, 4, 2), lambda L: L.UpSampling2D(2)),
    "UpSampling2D-bilinear": single(
        (3, 4, 2), lambda L: L.UpSampling2D((2, 3), interpolation="bilinear")
    ),
    "UpSampling2D-channels-first": single(
        (2, 3, 4),
        lambda L: L.UpSampling2D(2, data_format="channels_first", interpolation="bilinear"),
    ),
    "Add": merge(lambda L: L.Add()),
    "Add-three": merge(lambda L: L.Add(), branches=3),
    "Subtract": merge(lambda L: L.Subtract()),
    "Multiply": merge(lambda L: L.Multiply(), branches=3),
    "Average": merge(lambda L: L.Average(), branches=3),
    "Maximum": merge(lambda L: L.Maximum()),
    "Minimum": merge(lambda L: L.Minimum()),
    "Concatenate": merge(lambda L: L.Concatenate()),
    "Concatenate-axis0-features": merge(lambda L: L.Concatenate(axis=1)),
}


def activations_model(keras: Any) -> Any:
    """Every activation in its own branch of one model: one save, one load, one predict."""
    inp = keras.Input((8,), name="x")
    branches = [keras.layers.Activation(name, name=f"act_{name}")(inp) for name in ACTIVATIONS]
    return keras.Model(inp, branches)


# TensorFlow's CPU kernels cannot run these; keras-cpu must say so, naming the layer.
KERAS_CPU_UNSUPPORTED = {
    "Conv1D-channels-first": "channels_first",
    "Conv2D-channels-first": "channels_first",
    "Conv2DTranspose-channels-first": "channels_first",
    "Conv2DTranspose-dilated": "dilation_rate",
}


def recipe_inputs(artifact: Any, recipe: InputRecipe) -> dict[str, np.ndarray]:
    return generate_inputs(recipe, artifact.graph.input_shapes, artifact.graph.input_dtypes)


def layer_verdicts(
    pool: RunnerPool,
    artifact: Any,
    inputs: dict[str, np.ndarray],
    backends: tuple[str, ...] = ("keras-cpu", "numpy"),
) -> dict[tuple[str, str], list[str]]:
    """Verdicts per (backend, mode) against numpy-f64; every backend must have run."""
    results = run_locally(
        pool, artifact, inputs, backends=list(backends), reference="numpy-f64", modes=MODES
    )
    failed = {b: r.reason for b, r in results.items() if r.status != "done"}
    assert not failed, failed
    comparisons = compare(
        artifact.graph,
        results,
        against="numpy-f64",
        modes=MODES,
        options=EngineOptions(thresholds=VerdictThresholds(), histogram_bins=11),
    )
    assert {(c.backend, c.mode) for c in comparisons} == {(b, m) for b in backends for m in MODES}
    return {(c.backend, c.mode): [row.divergence.verdict for row in c.layers] for c in comparisons}


def assert_within_rounding(verdicts: dict[tuple[str, str], list[str]]) -> None:
    bad = {key: v for key, v in verdicts.items() if not set(v) <= WITHIN_ROUNDING}
    assert not bad, bad


# Keras 3 on TensorFlow's CPU adds the bias of these channels_first layers along the wrong
# axis (the dilated Conv3D: along the last spatial axis, when its size equals the filters,
# as here): each is judged by its channels_last twin, made here.
KERAS_CPU_WRONG: dict[str, Callable[[Any], Any]] = {
    "SeparableConv2D-channels-first": lambda L: L.SeparableConv2D(4, 3),
    "Conv3D-channels-first-dilated": lambda L: L.Conv3D(3, 2, dilation_rate=2),
}
# TensorFlow runs these transposed convolutions on the CPU with oneDNN only: without it
# keras-cpu reports them unsupported, naming the reason.
NEEDS_ONEDNN = {
    "Conv1DTranspose-channels-first",
    "Conv1DTranspose-dilated",
    "Conv3DTranspose-channels-first",
    "Conv3DTranspose-dilated",
}


def saved_case(
    cases: dict[str, Builder], case: str, keras: Any, save_model: Any
) -> tuple[Any, Any]:
    """A case's model with weights drawn from a seed its name fixes, and its saved file
    loaded as an artifact."""
    model = cases[case](keras)
    randomize_weights(model, seed=sum(map(ord, case)))
    return model, save_model(model)


@pytest.mark.parametrize(
    "case",
    sorted(set(CASES) - set(KERAS_CPU_UNSUPPORTED) - set(KERAS_CPU_WRONG) - NEEDS_ONEDNN),
)
def test_layer_within_rounding_of_float64(
    case: str, keras: Any, save_model: Any, runner_pool: RunnerPool
) -> None:
    _, artifact = saved_case(CASES, case, keras, save_model)
    inputs = recipe_inputs(artifact, InputRecipe("uniform", batch=3, seed=7))
    assert_within_rounding(layer_verdicts(runner_pool, artifact, inputs))


# Convolutions, each finished differently: grouped, depthwise, channels_first (finished
# after its layout is restored), 1-D and 3-D, and a softmax across the filters of each
# block's rows.
IN_BLOCKS: dict[str, Builder] = {
    **{
        name: CASES[name]
        for name in (
            "Conv1D-groups",
            "Conv2D-groups",
            "Conv3D-channels-first",
            "Conv3D-dilated-groups",
            "DepthwiseConv2D-multiplier-stride",
            "SeparableConv2D-multiplier-stride",
        )
    },
    "Conv2D-softmax": single(
        (5, 6, 3), lambda L: L.Conv2D(4, 3, padding="same", activation="softmax")
    ),
}


@pytest.mark.parametrize("block_bytes", [1, 1000, 10000])
@pytest.mark.parametrize("case", sorted(IN_BLOCKS))
def test_convolutions_copied_out_in_blocks_stay_within_rounding(
    case: str,
    block_bytes: int,
    keras: Any,
    save_model: Any,
    runner_pool: RunnerPool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The receptive fields copied out a line at a time, and a few lines at a time (lines
    take 32 B to 6.5 kB here: blocks that end inside a sample and straddle two): keras-cpu
    must stay within rounding of the float64 port computed so, and the float32 port too."""
    monkeypatch.setattr(layers, "FIELDS_BLOCK_BYTES", block_bytes)
    _, artifact = saved_case(IN_BLOCKS, case, keras, save_model)
    inputs = recipe_inputs(artifact, InputRecipe("uniform", batch=3, seed=7))
    assert_within_rounding(layer_verdicts(runner_pool, artifact, inputs))


@pytest.mark.parametrize("case", sorted(KERAS_CPU_UNSUPPORTED))
def test_tensorflow_cpu_gaps_reported_and_numpy_still_runs(
    case: str, keras: Any, save_model: Any, runner_pool: RunnerPool
) -> None:
    _, artifact = saved_case(CASES, case, keras, save_model)
    layer = artifact.graph.compute_layers[0]
    inputs = recipe_inputs(artifact, InputRecipe("uniform", batch=2, seed=1))
    keras_result = run_locally(
        runner_pool, artifact, inputs, backends=["keras-cpu"], reference="numpy-f64"
    )["keras-cpu"]
    assert keras_result.status == "unsupported"
    assert keras_result.reason.startswith(f"unsupported: {layer.name} ({layer.class_name})")
    assert KERAS_CPU_UNSUPPORTED[case] in keras_result.reason
    inputs = recipe_inputs(artifact, InputRecipe("uniform", batch=3, seed=7))
    assert_within_rounding(layer_verdicts(runner_pool, artifact, inputs, ("numpy",)))


@pytest.mark.parametrize("case", sorted(NEEDS_ONEDNN))
def test_transposed_convolutions_tensorflow_runs_with_onednn_only(
    case: str, keras: Any, save_model: Any, runner_pool: RunnerPool
) -> None:
    _, artifact = saved_case(CASES, case, keras, save_model)
    inputs = recipe_inputs(artifact, InputRecipe("uniform", batch=3, seed=7))
    if onednn_enabled():
        assert_within_rounding(layer_verdicts(runner_pool, artifact, inputs))
        return
    keras_result = run_locally(
        runner_pool, artifact, inputs, backends=["keras-cpu"], reference="numpy-f64"
    )["keras-cpu"]
    assert keras_result.status == "unsupported"
    assert "with oneDNN only" in keras_result.reason
    assert_within_rounding(layer_verdicts(runner_pool, artifact, inputs, ("numpy",)))


@pytest.mark.parametrize("case", sorted(KERAS_CPU_WRONG))
def test_keras_channels_first_bias_bugs_are_flagged(
    case: str, keras: Any, save_model: Any, runner_pool: RunnerPool
) -> None:
    """Our port must agree with Keras's channels_last twin; keras-cpu is judged by that twin."""
    first = CASES[case](keras)
    channels, *spatial = first.inputs[0].shape[1:]
    last = keras.Sequential(
        [keras.Input((*spatial, channels)), KERAS_CPU_WRONG[case](keras.layers)]
    )
    randomize_weights(first, seed=5)
    last.set_weights(first.get_weights())
    artifact = save_model(first)
    inputs = recipe_inputs(artifact, InputRecipe("uniform", batch=2, seed=2))
    (batch,) = inputs.values()
    twin = np.moveaxis(np.asarray(last(np.moveaxis(batch, 1, -1))), -1, 1)
    keras_is_wrong = not np.allclose(np.asarray(first(batch)), twin, atol=1e-4)
    verdicts = layer_verdicts(runner_pool, artifact, inputs)
    assert set(verdicts[("numpy", "accumulated")]) <= WITHIN_ROUNDING
    expected = {"mismatch"} if keras_is_wrong else WITHIN_ROUNDING
    assert set(verdicts[("keras-cpu", "accumulated")]) <= expected


MULTI_HEAD_ATTENTION = {
    "self": ([(4, 6), (4, 6)], {}),
    "cross-key": ([(4, 6), (5, 7), (5, 3)], {"value_dim": 4}),
    "nobias-output-shape": ([(4, 6), (5, 7)], {"use_bias": False, "output_shape": (2, 5)}),
    "gate": ([(4, 6), (5, 7)], {"use_gate": True}),
    "4d-joint-axes": ([(3, 4, 6), (3, 5, 6)], {}),
    "4d-last-axis": ([(3, 4, 6), (3, 5, 6)], {"attention_axes": -2}),
}


@pytest.mark.parametrize("case", sorted(MULTI_HEAD_ATTENTION))
def test_multi_head_attention_with_weights_keyed_by_path(case: str, keras: Any) -> None:
    """The port against Keras itself, weights keyed as graph.py must key them: by their
    path in the layer ('query/kernel', ...)."""
    shapes, options = MULTI_HEAD_ATTENTION[case]
    rng = np.random.default_rng(3)
    tensors = [rng.uniform(-1, 1, (2, *shape)).astype(np.float32) for shape in shapes]
    layer = keras.layers.MultiHeadAttention(num_heads=2, key_dim=3, **options)
    layer(*tensors)
    for variable in layer.weights:
        variable.assign(rng.normal(0, 0.5, variable.shape).astype(np.float32))
    weights = {
        w.path.removeprefix(f"{layer.path}/"): np.asarray(w.numpy(), np.float64)
        for w in layer.weights
    }
    ours = LAYERS["MultiHeadAttention"](
        [t.astype(np.float64) for t in tensors], layer.get_config(), weights
    )
    np.testing.assert_allclose(ours, np.asarray(layer(*tensors)), atol=2e-6)


def test_multi_head_attention_refuses_weights_keyed_by_name() -> None:
    with pytest.raises(LayerConfigUnsupported, match="keyed by their path"):
        LAYERS["MultiHeadAttention"](
            [np.ones((1, 2, 3))] * 2, {"num_heads": 1, "key_dim": 2}, {"kernel": np.ones(1)}
        )


def test_every_activation_within_rounding(
    keras: Any, save_model: Any, runner_pool: RunnerPool
) -> None:
    artifact = save_model(activations_model(keras))
    recipe = InputRecipe("uniform", batch=4, seed=3, low=-4.0, high=4.0)
    inputs = recipe_inputs(artifact, recipe)
    verdicts = layer_verdicts(runner_pool, artifact, inputs)
    names = [layer.name for layer in artifact.graph.compute_layers]
    for (backend, mode), layer_verdicts_ in verdicts.items():
        bad = [n for n, v in zip(names, layer_verdicts_, strict=True) if v not in WITHIN_ROUNDING]
        if backend == "keras-cpu":
            # Keras 3's TensorFlow sparsemax sums the cumulative sums instead of taking the
            # k-th one; its rows then no longer sum to 1. driftbench must flag it, not hide it.
            sparsemax = np.asarray(keras.activations.sparsemax(inputs["x"]))
            if not np.allclose(sparsemax.sum(axis=-1), 1.0, atol=1e-5):
                assert "act_sparsemax" in bad
                bad.remove("act_sparsemax")
        assert not bad, (backend, mode, bad)


def test_sparsemax_port_projects_onto_the_simplex() -> None:
    x = np.array([[0.5, 1.5, 0.1], [3.0, 0.0, -1.0]])
    out = ACTIVATIONS["sparsemax"](x)
    assert np.allclose(out.sum(axis=-1), 1.0)
    assert np.allclose(out, [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    assert np.allclose(ACTIVATIONS["sparsemax"](np.array([[0.2, 0.4]])), [[0.4, 0.6]])


def test_tanh_approximate_gelu_matches_keras(keras: Any) -> None:
    x = np.linspace(-5, 5, 101).astype(np.float32)
    expected = np.asarray(keras.activations.gelu(x, approximate=True), dtype=np.float64)
    ours = gelu(x.astype(np.float64), approximate=True)
    assert np.max(np.abs(ours - expected)) < 1e-6
    assert np.max(np.abs(ours - gelu(x.astype(np.float64)))) > 1e-4


def test_embedding_token_ids_within_rounding(
    keras: Any, save_model: Any, runner_pool: RunnerPool
) -> None:
    """Its own case: the model takes integer ids, which a uniform recipe cannot give."""
    L = keras.layers
    model = keras.Sequential([keras.Input((5,), dtype="int32"), L.Embedding(7, 4), L.Dense(3)])
    randomize_weights(model, seed=11)
    artifact = save_model(model)
    inputs = recipe_inputs(artifact, InputRecipe("randint", batch=3, seed=2, low=0, high=7))
    assert_within_rounding(layer_verdicts(runner_pool, artifact, inputs))


# Layers whose case is a test of its own above, not a CASES entry.
OWN_TESTS = {"Embedding"}


def test_every_supported_class_has_a_case() -> None:
    """keras.ops operations are the operation tests' concern, not this table's."""
    covered = {case.split("-")[0] for case in CASES} | OWN_TESTS | {"Activation", "InputLayer"}
    layers = {name for name in SUPPORTED_LAYERS if not name.startswith(OPERATION_PREFIX)}
    assert covered >= layers
