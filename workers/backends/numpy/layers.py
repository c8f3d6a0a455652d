"""Our own numpy implementation of each supported Keras layer, from config and weights.

One short function per layer, plain maths, written as a careful engineer would
port a model by hand. Functions compute in the dtype of their inputs (float32 or
float64), so the same code is both the `numpy` port and the `numpy-f64` reference.
Convolutions use im2col and matrix products, the usual hand-port technique, a block of
receptive fields at a time, with TensorFlow's padding rules ("same" puts the extra pixel
after, not before).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from workers.backends.numpy.activations import elu, get_activation, leaky_relu, softmax

Config = dict[str, Any]
Weights = dict[str, np.ndarray]
LayerFunction = Callable[[list[np.ndarray], Config, Weights], np.ndarray]
MaskedFunction = Callable[[np.ndarray, Config, Weights, np.ndarray | None], np.ndarray]
# What is done to a block of a convolution's outputs while it is in cache (bias, activation).
Finish = Callable[[np.ndarray], np.ndarray]

# The receptive fields copied out at a time (im2col), about a megabyte: one buffer serves
# every block, and the copy and the matrix product reading it stay in the core's cache. A
# whole batch's fields at once (66 MB for cifar_cnn's conv2d_2 at batch 64) were mapped and
# faulted in afresh on every call: that layer took 21 ms, 11 ms in blocks (float32, one
# BLAS thread as in a job process).
FIELDS_BLOCK_BYTES = 2**20


class LayerConfigUnsupported(ValueError):
    """A supported class used with an option this port does not implement."""


def _tuple(value: int | Sequence[int], rank: int) -> tuple[int, ...]:
    return (int(value),) * rank if isinstance(value, int) else tuple(int(v) for v in value)


def _channels_last(x: np.ndarray, data_format: str | None) -> np.ndarray:
    return np.moveaxis(x, 1, -1) if data_format == "channels_first" else x


def _restore_format(x: np.ndarray, data_format: str | None) -> np.ndarray:
    return np.moveaxis(x, -1, 1) if data_format == "channels_first" else x


def _same_padding(size: int, window: int, stride: int) -> tuple[int, int]:
    """TensorFlow's SAME rule: output ceil(size/stride), the odd pixel padded after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + window - size, 0)
    return total // 2, total - total // 2


def _paddings(
    spatial: Sequence[int], windows: Sequence[int], strides: Sequence[int], padding: str
) -> list[tuple[int, int]]:
    if padding == "valid":
        return [(0, 0)] * len(spatial)
    if padding == "same":
        return [_same_padding(s, w, st) for s, w, st in zip(spatial, windows, strides, strict=True)]
    if padding == "causal":
        return [(w - 1, 0) for w in windows]
    raise LayerConfigUnsupported(f"padding {padding!r}")


def _windows(
    x: np.ndarray, kernel: Sequence[int], strides: Sequence[int], dilation: Sequence[int]
) -> np.ndarray:
    """View (N, *out, C, *kernel) of every receptive field of channels-last `x`."""
    rank = len(kernel)
    span = [(k - 1) * d + 1 for k, d in zip(kernel, dilation, strict=True)]
    view = sliding_window_view(x, span, axis=tuple(range(1, rank + 1)))
    picks = (
        slice(None),
        *(slice(None, None, s) for s in strides),
        slice(None),
        *(slice(None, None, d) for d in dilation),
    )
    return view[picks]


def _convolve(
    x: np.ndarray,
    kernel: np.ndarray,
    strides: Sequence[int],
    dilation: Sequence[int],
    padding: str,
    groups: int,
    finish: Finish | None = None,
) -> np.ndarray:
    """Channels-last N-d convolution; `kernel` is Keras's (*window, C/groups, filters).
    `finish` is applied to each block of outputs (rows of filters) as it is computed."""
    rank = kernel.ndim - 2
    window = kernel.shape[:rank]
    span = [(k - 1) * d + 1 for k, d in zip(window, dilation, strict=True)]
    pads = _paddings(x.shape[1:-1], span, strides, padding)
    x = np.pad(x, [(0, 0), *pads, (0, 0)])
    channels = x.shape[-1]
    filters = kernel.shape[-1]
    per_group_in, per_group_out = channels // groups, filters // groups
    taps = int(np.prod(window))
    # kernel (*window, cg, groups*fg) -> (taps, cg, groups, fg)
    grouped_kernel = kernel.reshape(taps, per_group_in, groups, per_group_out)
    flat_kernel = kernel.reshape(taps * per_group_in, filters)
    # (N, *out, C, *window) -> (N, *out, *window, C): a field's values in the kernel's order.
    view = np.moveaxis(_windows(x, window, strides, dilation), 1 + rank, -1)
    batch, rows, *rest = view.shape[: 1 + rank]
    # A line: one sample's fields along the first output axis's one position.
    line = view.shape[2:]
    line_fields = int(np.prod(rest, dtype=np.int64))
    lines = batch * rows
    line_bytes = max(1, int(np.prod(line)) * x.itemsize)
    per_block = max(1, min(lines, FIELDS_BLOCK_BYTES // line_bytes))
    block = np.empty((per_block, *line), dtype=x.dtype)
    out = np.empty((lines, line_fields, filters), dtype=np.result_type(x, kernel))
    for start in range(0, lines, per_block):
        stop = min(lines, start + per_block)
        filled = start
        while filled < stop:
            sample, row = divmod(filled, rows)
            take = min(stop - filled, rows - row)
            block[filled - start : filled - start + take] = view[sample, row : row + take]
            filled += take
        target = out[start:stop].reshape(-1, filters)
        fields = block[: stop - start].reshape(len(target), taps, groups, per_group_in)
        if groups == 1:
            np.matmul(fields.reshape(len(target), taps * per_group_in), flat_kernel, out=target)
        else:
            grouped = np.einsum("mtgc,tcgf->mgf", fields, grouped_kernel, optimize=True)
            target[...] = grouped.reshape(len(target), filters)
        if finish is not None:
            target[...] = finish(target)
    return out.reshape(batch, rows, *rest, filters)


def _with_bias(x: np.ndarray, config: Config, weights: Weights) -> np.ndarray:
    if config.get("use_bias", True) and "bias" in weights:
        return x + weights["bias"]
    return x


def _finish(x: np.ndarray, config: Config, weights: Weights) -> np.ndarray:
    return get_activation(config.get("activation"))(_with_bias(x, config, weights))


def _finish_map(x: np.ndarray, config: Config, weights: Weights) -> np.ndarray:
    """A channels-last map's bias, then its layout restored, then the activation: Keras
    activates in the layer's own layout (a softmax of a channels_first map runs along
    its last axis, the width, not the channels)."""
    restored = _restore_format(_with_bias(x, config, weights), config.get("data_format"))
    return get_activation(config.get("activation"))(restored)


def _finish_in_blocks(config: Config, weights: Weights) -> Finish | None:
    """A channels-last map's bias and activation, for `_convolve` to apply block by block
    while the block is in cache (cifar_cnn at batch 64: its bias and ReLU went from 9 ms
    over the whole maps to about 2); None for a channels_first map, finished after its
    layout is restored."""
    if config.get("data_format") == "channels_first":
        return None
    return lambda block: _finish(block, config, weights)


def _finished(
    out: np.ndarray, config: Config, weights: Weights, finish: Finish | None
) -> np.ndarray:
    return out if finish is not None else _finish_map(out, config, weights)


def conv(x: np.ndarray, config: Config, weights: Weights) -> np.ndarray:
    """Conv1D, Conv2D and Conv3D (any padding, strides, dilation, groups, data format)."""
    kernel = weights["kernel"]
    rank = kernel.ndim - 2
    finish = _finish_in_blocks(config, weights)
    out = _convolve(
        _channels_last(x, config.get("data_format")),
        kernel,
        strides=_tuple(config["strides"], rank),
        dilation=_tuple(config["dilation_rate"], rank),
        padding=config["padding"],
        groups=int(config.get("groups", 1)),
        finish=finish,
    )
    return _finished(out, config, weights, finish)


def _depthwise(
    x: np.ndarray, depthwise_kernel: np.ndarray, config: Config, finish: Finish | None = None
) -> np.ndarray:
    """Depthwise convolution is a grouped one with one group per input channel."""
    rank = depthwise_kernel.ndim - 2
    *window, channels, multiplier = depthwise_kernel.shape
    return _convolve(
        x,
        depthwise_kernel.reshape(*window, 1, channels * multiplier),
        strides=_tuple(config["strides"], rank),
        dilation=_tuple(config["dilation_rate"], rank),
        padding=config["padding"],
        groups=channels,
        finish=finish,
    )


def depthwise_conv(x: np.ndarray, config: Config, weights: Weights) -> np.ndarray:
    finish = _finish_in_blocks(config, weights)
    out = _depthwise(
        _channels_last(x, config.get("data_format")), weights["kernel"], config, finish
    )
    return _finished(out, config, weights, finish)


def separable_conv(x: np.ndarray, config: Config, weights: Weights) -> np.ndarray:
    data_format = config.get("data_format")
    depthwise = _depthwise(_channels_last(x, data_format), weights["depthwise_kernel"], config)
    pointwise = weights["pointwise_kernel"]
    out = depthwise @ pointwise.reshape(pointwise.shape[-2], pointwise.shape[-1])
    return _finish_map(out, config, weights)


def _transpose_length(
    size: int, window: int, stride: int, padding: str, output_padding: int | None
) -> int:
    if output_padding is None:
        return size * stride + max(window - stride, 0) if padding == "valid" else size * stride
    pad = window // 2 if padding == "same" else 0
    return (size - 1) * stride + window - 2 * pad + output_padding


def conv_transpose(x: np.ndarray, config: Config, weights: Weights) -> np.ndarray:
    """Conv1DTranspose, Conv2DTranspose and Conv3DTranspose: scatter every input pixel
    times each kernel tap, then crop."""
    kernel = weights["kernel"]  # (*window, filters, channels)
    rank = kernel.ndim - 2
    data_format = config.get("data_format")
    x = _channels_last(x, data_format)
    strides = _tuple(config["strides"], rank)
    dilation = _tuple(config["dilation_rate"], rank)
    output_padding = config.get("output_padding")
    output_padding = _tuple(output_padding, rank) if output_padding is not None else (None,) * rank
    window = kernel.shape[:rank]
    span = [(k - 1) * d + 1 for k, d in zip(window, dilation, strict=True)]
    spatial = x.shape[1:-1]
    full = [(s - 1) * st + w for s, st, w in zip(spatial, strides, span, strict=True)]
    taps = np.tensordot(x, kernel, axes=([-1], [-1]))  # (N, *spatial, *window, filters)
    out = np.zeros((x.shape[0], *full, kernel.shape[-2]), dtype=x.dtype)
    for tap in np.ndindex(*window):
        region = tuple(
            slice(t * d, t * d + (s - 1) * st + 1, st)
            for t, d, s, st in zip(tap, dilation, spatial, strides, strict=True)
        )
        out[(slice(None), *region)] += taps[(slice(None),) * (rank + 1) + tap]
    lengths = [
        _transpose_length(s, w, st, config["padding"], op)
        for s, w, st, op in zip(spatial, span, strides, output_padding, strict=True)
    ]
    crops = []
    for size, length, w, st in zip(spatial, lengths, span, strides, strict=True):
        before = 0 if config["padding"] == "valid" else max((size - 1) * st + w - length, 0) // 2
        crops.append((before, length))
    grow = [
        (0, max(0, before + length - f)) for (before, length), f in zip(crops, full, strict=True)
    ]
    out = np.pad(out, [(0, 0), *grow, (0, 0)])
    out = out[(slice(None), *(slice(b, b + length) for b, length in crops))]
    return _finish_map(out, config, weights)


def dense(x: np.ndarray, config: Config, weights: Weights) -> np.ndarray:
    return _finish(x @ weights["kernel"], config, weights)


def _pool(x: np.ndarray, config: Config, rank: int, reduce: str) -> np.ndarray:
    data_format = config.get("data_format")
    x = _channels_last(x, data_format)
    window = _tuple(config["pool_size"], rank)
    strides = _tuple(config.get("strides") or window, rank)
    pads = _paddings(x.shape[1:-1], window, strides, config["padding"])
    full_pads = [(0, 0), *pads, (0, 0)]
    window_axes = tuple(range(-rank, 0))
    if reduce == "max":
        padded = np.pad(x, full_pads, constant_values=-np.inf)
        out = _windows(padded, window, strides, (1,) * rank).max(axis=window_axes)
    else:
        # TensorFlow averages over the real pixels only, not the padding.
        sums = _windows(np.pad(x, full_pads), window, strides, (1,) * rank).sum(axis=window_axes)
        ones = np.pad(np.ones((1, *x.shape[1:-1], 1), dtype=x.dtype), full_pads)
        counts = _windows(ones, window, strides, (1,) * rank).sum(axis=window_axes)
        out = sums / counts
    return _restore_format(out, data_format)


def _global_pool(x: np.ndarray, config: Config, reduce: Callable[..., np.ndarray]) -> np.ndarray:
    data_format = config.get("data_format")
    axes = (
        tuple(range(2, x.ndim)) if data_format == "channels_first" else tuple(range(1, x.ndim - 1))
    )
    return reduce(x, axis=axes, keepdims=bool(config.get("keepdims", False)))


def global_average_pooling_1d(
    x: np.ndarray, config: Config, weights: Weights, mask: np.ndarray | None
) -> np.ndarray:
    """The mean over the steps the mask keeps (a sample with none kept gives NaN, as in
    Keras)."""
    if mask is None:
        return _global_pool(x, config, np.mean)
    channels_first = config.get("data_format") == "channels_first"
    kept = np.expand_dims(mask, 1 if channels_first else 2)
    steps = 2 if channels_first else 1
    keepdims = bool(config.get("keepdims", False))
    total = np.sum(np.where(kept, x, x.dtype.type(0)), axis=steps, keepdims=keepdims)
    with np.errstate(invalid="ignore"):
        return total / np.sum(kept.astype(x.dtype), axis=steps, keepdims=keepdims)


def _norm_axes(axis: int | Sequence[int], ndim: int) -> tuple[int, ...]:
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    return tuple(a % ndim for a in axes)


def _along(vector: np.ndarray, axis: int, ndim: int) -> np.ndarray:
    shape = [1] * ndim
    shape[axis] = -1
    return vector.reshape(shape)


def batch_norm(x: np.ndarray, config: Config, weights: Weights) -> np.ndarray:
    axes = _norm_axes(config.get("axis", -1), x.ndim)
    if len(axes) != 1:
        raise LayerConfigUnsupported(f"BatchNormalization over several axes {axes}")
    ones = np.ones(x.shape[axes[0]], dtype=x.dtype)
    gamma = weights.get("gamma", ones)
    beta = weights.get("beta", np.zeros_like(ones))
    scale = gamma / np.sqrt(weights["moving_variance"] + x.dtype.type(config["epsilon"]))
    axis = axes[0]
    normalised = (x - _along(weights["moving_mean"], axis, x.ndim)) * _along(scale, axis, x.ndim)
    return normalised + _along(beta, axis, x.ndim)


def rescaling(x: np.ndarray, config: Config, weights: Weights) -> np.ndarray:
    """x * scale + offset; a list scale or offset is per channel (the last axis)."""
    scale = np.asarray(config["scale"], dtype=x.dtype)
    return x * scale + np.asarray(config.get("offset", 0.0), dtype=x.dtype)


NORMALIZATION_EPSILON = 1e-7  # keras.backend.epsilon(): the smallest divisor Keras uses


def normalization_statistics(config: Config, weights: Weights) -> tuple[np.ndarray, np.ndarray]:
    """The mean and variance a Normalization layer applies: its adapted weights, or the
    constants given in its config (then it has no weights)."""
    if "mean" in weights:
        return weights["mean"], weights["variance"]
    if config.get("mean") is None or config.get("variance") is None:
        raise LayerConfigUnsupported("neither adapted nor given a mean and variance")
    return np.asarray(config["mean"], np.float64), np.asarray(config["variance"], np.float64)


def normalization(x: np.ndarray, config: Config, weights: Weights) -> np.ndarray:
    """(x - mean) / max(sqrt(variance), epsilon), per kept axis; `invert` undoes it."""
    axis = config.get("axis", -1)
    kept = () if axis is None else _norm_axes(axis, x.ndim)
    shape = [x.shape[a] if a in kept else 1 for a in range(x.ndim)]
    mean, variance = (
        np.asarray(s, dtype=x.dtype).reshape(shape)
        for s in normalization_statistics(config, weights)
    )
    spread = np.maximum(np.sqrt(variance), x.dtype.type(NORMALIZATION_EPSILON))
    if config.get("invert"):
        return mean + x * spread
    return (x - mean) / spread


def layer_norm(x: np.ndarray, config: Config, weights: Weights) -> np.ndarray:
    axes = _norm_axes(config.get("axis", -1), x.ndim)
    epsilon = x.dtype.type(config["epsilon"])
    shape = [x.shape[a] if a in axes else 1 for a in range(x.ndim)]
    if config.get("rms_scaling"):
        # Keras's deprecated rms_scaling divides by the variance's root, not the RMS,
        # and skips beta; a port must reproduce what the saved model computes.
        variance = np.var(x, axis=axes, keepdims=True)
        out = x / np.sqrt(variance + epsilon)
        return out * weights["gamma"].reshape(shape) if "gamma" in weights else out
    else:
        mean = np.mean(x, axis=axes, keepdims=True)
        variance = np.mean((x - mean) ** 2, axis=axes, keepdims=True)
        out = (x - mean) / np.sqrt(variance + epsilon)
    if "gamma" in weights:
        out = out * weights["gamma"].reshape(shape)
    if "beta" in weights:
        out = out + weights["beta"].reshape(shape)
    return out


def relu_layer(x: np.ndarray, config: Config, weights: Weights) -> np.ndarray:
    """Keras ReLU: max_value above, x between threshold and max, slope*(x-threshold) below."""
    kind = x.dtype.type
    threshold = kind(config.get("threshold", 0.0))
    slope = kind(config.get("negative_slope", 0.0))
    out = np.where(x >= threshold, x, slope * (x - threshold))
    max_value = config.get("max_value")
    return out if max_value is None else np.minimum(out, kind(max_value))


def prelu(x: np.ndarray, config: Config, weights: Weights) -> np.ndarray:
    alpha = weights["alpha"]
    return np.maximum(x, x.dtype.type(0)) + alpha * np.minimum(x, x.dtype.type(0))


def reshape(x: np.ndarray, config: Config, weights: Weights) -> np.ndarray:
    return x.reshape(x.shape[0], *config["target_shape"])


def flatten(x: np.ndarray, config: Config, weights: Weights) -> np.ndarray:
    if config.get("data_format") == "channels_first" and x.ndim > 2:
        x = np.moveaxis(x, 1, -1)
    return x.reshape(x.shape[0], -1)


def permute(x: np.ndarray, config: Config, weights: Weights) -> np.ndarray:
    return np.transpose(x, (0, *config["dims"]))


def _pairs(value: Any, rank: int) -> list[tuple[int, int]]:
    """(before, after) per axis. Keras writes one axis's pair as (a, b), several axes
    as one n or (a, b) per axis."""
    if isinstance(value, int):
        return [(value, value)] * rank
    if rank == 1 and all(isinstance(v, int) for v in value):
        return [(int(value[0]), int(value[1]))]
    return [(v, v) if isinstance(v, int) else (int(v[0]), int(v[1])) for v in value]


def zero_padding(x: np.ndarray, config: Config, weights: Weights) -> np.ndarray:
    data_format = config.get("data_format")
    pads = _pairs(config["padding"], x.ndim - 2)
    return _restore_format(
        np.pad(_channels_last(x, data_format), [(0, 0), *pads, (0, 0)]), data_format
    )


def cropping(x: np.ndarray, config: Config, weights: Weights) -> np.ndarray:
    data_format = config.get("data_format")
    inner = _channels_last(x, data_format)
    crops = _pairs(config["cropping"], x.ndim - 2)
    region = tuple(
        slice(a, size - b) for (a, b), size in zip(crops, inner.shape[1:-1], strict=True)
    )
    return _restore_format(inner[(slice(None), *region)], data_format)


def _bilinear_axis(x: np.ndarray, axis: int, size: int) -> np.ndarray:
    """Half-pixel-centre linear resize along one axis, as tf.image.resize does."""
    length = x.shape[axis]
    centres = (np.arange(size, dtype=np.float64) + 0.5) * (length / size) - 0.5
    floor = np.floor(centres)
    frac = _along((centres - floor).astype(x.dtype), axis, x.ndim)
    low = np.clip(floor.astype(int), 0, length - 1)
    high = np.clip(floor.astype(int) + 1, 0, length - 1)
    return np.take(x, low, axis=axis) * (1 - frac) + np.take(x, high, axis=axis) * frac


def _nearest_axis(x: np.ndarray, axis: int, size: int) -> np.ndarray:
    """TensorFlow's half-pixel nearest neighbour: source floor((i + 0.5) * length / size),
    computed in float32 as its kernel does, so a source index on a tie is TF's own."""
    scale = np.float32(x.shape[axis]) / np.float32(size)
    source = np.floor((np.arange(size, dtype=np.float32) + np.float32(0.5)) * scale)
    return np.take(x, np.minimum(source.astype(int), x.shape[axis] - 1), axis=axis)


RESAMPLERS: dict[str, Callable[[np.ndarray, int, int], np.ndarray]] = {
    "nearest": _nearest_axis,
    "bilinear": _bilinear_axis,
}


def _resample(x: np.ndarray, sizes: Sequence[int], interpolation: str) -> np.ndarray:
    """Channels-last `x` resized to `sizes`, one spatial axis at a time (both methods are
    separable). Nearest with an integer factor repeats each pixel, as UpSampling does."""
    if interpolation not in RESAMPLERS:
        raise LayerConfigUnsupported(f"interpolation {interpolation!r}")
    for axis, size in enumerate(sizes, start=1):
        x = RESAMPLERS[interpolation](x, axis, int(size))
    return x


def up_sampling(x: np.ndarray, config: Config, weights: Weights) -> np.ndarray:
    """UpSampling1D, 2D and 3D."""
    data_format = config.get("data_format")
    inner = _channels_last(x, data_format)
    factors = _tuple(config["size"], inner.ndim - 2)
    sizes = [n * f for n, f in zip(inner.shape[1:-1], factors, strict=True)]
    out = _resample(inner, sizes, config.get("interpolation", "nearest"))
    return _restore_format(out, data_format)


def _centre_window(x: np.ndarray, height: int, width: int) -> np.ndarray:
    """The height x width window of channels-last images, centred (the odd pixel after)."""
    top, left = (x.shape[1] - height) // 2, (x.shape[2] - width) // 2
    return x[:, top : top + height, left : left + width]


def _crop_to_aspect_ratio(x: np.ndarray, height: int, width: int) -> np.ndarray:
    """The largest centred window with the target's aspect ratio, as Keras crops before
    resizing (`crop_to_aspect_ratio`, and CenterCrop onto a larger target)."""
    have_height, have_width = x.shape[1:3]
    crop_height = max(min(have_height, have_width * height // width), 1)
    crop_width = max(min(have_width, have_height * width // height), 1)
    return _centre_window(x, crop_height, crop_width)


def resizing(x: np.ndarray, config: Config, weights: Weights) -> np.ndarray:
    """Resizing as Keras runs it, tf.image.resize: half-pixel centres, no antialiasing."""
    for option in ("pad_to_aspect_ratio", "antialias"):
        if config.get(option):
            raise LayerConfigUnsupported(f"{option}=True")
    data_format = config.get("data_format")
    inner = _channels_last(x, data_format)
    height, width = int(config["height"]), int(config["width"])
    if config.get("crop_to_aspect_ratio"):
        inner = _crop_to_aspect_ratio(inner, height, width)
    out = _resample(inner, (height, width), config.get("interpolation", "bilinear"))
    return _restore_format(out, data_format)


def center_crop(x: np.ndarray, config: Config, weights: Weights) -> np.ndarray:
    """The centred window; a target larger than the image in either dimension makes Keras
    crop to the target's aspect ratio and resize bilinearly instead (smart_resize)."""
    data_format = config.get("data_format")
    inner = _channels_last(x, data_format)
    height, width = int(config["height"]), int(config["width"])
    if inner.shape[1] >= height and inner.shape[2] >= width:
        out = _centre_window(inner, height, width)
    else:
        out = _resample(_crop_to_aspect_ratio(inner, height, width), (height, width), "bilinear")
    return _restore_format(out, data_format)


def repeat_vector(x: np.ndarray, config: Config, weights: Weights) -> np.ndarray:
    return np.repeat(x[:, np.newaxis], int(config["n"]), axis=1)


def _l2_normalize(x: np.ndarray, axis: int) -> np.ndarray:
    """keras.ops.normalize: x / max(||x||, epsilon) along `axis`."""
    norm = np.sqrt(np.sum(x * x, axis=axis, keepdims=True))
    return x / np.maximum(norm, x.dtype.type(NORMALIZATION_EPSILON))


def dot(inputs: list[np.ndarray], config: Config, weights: Weights) -> np.ndarray:
    """Keras's batch_dot: per sample, x's axes bar the contracted one, then y's; a result
    left with the batch axis alone becomes (batch, 1), as Keras returns it."""
    x, y = inputs
    axes = config["axes"]
    x_axis, y_axis = (axes, axes) if isinstance(axes, int) else axes
    x_axis, y_axis = x_axis % x.ndim, y_axis % y.ndim
    if config.get("normalize"):
        x, y = _l2_normalize(x, x_axis), _l2_normalize(y, y_axis)
    x, y = np.moveaxis(x, x_axis, -1), np.moveaxis(y, y_axis, 1)
    batch = x.shape[0]
    out = x.reshape(batch, -1, x.shape[-1]) @ y.reshape(batch, y.shape[1], -1)
    out = out.reshape(batch, *x.shape[1:-1], *y.shape[2:])
    return out.reshape(batch, 1) if out.ndim == 1 else out


def masking_mask(x: np.ndarray, config: Config) -> np.ndarray:
    """Keras's Masking mask: a timestep is kept unless every feature equals mask_value.
    The value is the float32 model's constant, in the float64 port too, so that a step
    Keras masks is masked here."""
    mask_value = config.get("mask_value", 0.0)
    if not isinstance(mask_value, int | float):
        raise LayerConfigUnsupported(f"mask_value {mask_value!r}")
    return np.any(x != x.dtype.type(np.float32(mask_value)), axis=-1)


def masking(x: np.ndarray, config: Config, weights: Weights) -> np.ndarray:
    """Masked timesteps zeroed; the mask itself is for the layers downstream."""
    return np.where(masking_mask(x, config)[..., np.newaxis], x, x.dtype.type(0))


def embedding(x: np.ndarray, config: Config, weights: Weights) -> np.ndarray:
    """Row lookup; an id outside [0, input_dim) is refused, as Keras's CPU gather is."""
    ids = np.asarray(x)
    if ids.dtype.kind == "f":
        if not np.array_equal(ids, np.round(ids)):
            raise LayerConfigUnsupported("non-integer token ids")
        ids = ids.astype(np.int64)
    table = weights["embeddings"]
    if ids.size and (ids.min() < 0 or ids.max() >= table.shape[0]):
        raise LayerConfigUnsupported(
            f"token ids in [{ids.min()}, {ids.max()}] outside [0, {table.shape[0]})"
        )
    return table[ids]


def layer_scale(x: np.ndarray, config: Config, weights: Weights) -> np.ndarray:
    """ConvNeXt's LayerScale: x times one learned scale per channel (its only variable)."""
    (gamma,) = weights.values()
    return x * gamma


def keyword_tensor(inputs: list[np.ndarray], config: Config, name: str) -> np.ndarray | None:
    """The tensor a node passed as keyword argument `name`, found through the call template
    the graph records in `config["call"]` (as for keras.ops nodes); None if not passed."""
    reference = config.get("call", {}).get("kwargs", {}).get(name)
    return None if reference is None else inputs[reference["input"]]


def _more_tensors(count: int) -> LayerConfigUnsupported:
    return LayerConfigUnsupported(
        f"called with {count} tensors: the port takes the input alone, with no mask or state"
    )


def unary(function: Callable[[np.ndarray, Config, Weights], np.ndarray]) -> LayerFunction:
    """A one-input layer. A second inbound tensor is a Keras mask or another argument the
    function would ignore, so it is refused rather than dropped."""

    def run(inputs: list[np.ndarray], config: Config, weights: Weights) -> np.ndarray:
        if len(inputs) != 1:
            raise _more_tensors(len(inputs))
        return function(inputs[0], config, weights)

    return run


def with_mask(function: MaskedFunction) -> LayerFunction:
    """A layer that takes its input's Keras mask. Keras's functional graph passes the mask
    as a tensor (computed by keras.ops nodes) in the call's `mask` keyword: inbound [x] or
    [x, mask], which is which read from the call template."""

    def run(inputs: list[np.ndarray], config: Config, weights: Weights) -> np.ndarray:
        mask = keyword_tensor(inputs, config, "mask")
        if len(inputs) != (1 if mask is None else 2):
            raise _more_tensors(len(inputs))
        return function(inputs[0], config, weights, None if mask is None else mask.astype(bool))

    return run


def _merge(reduce: Callable[[list[np.ndarray]], np.ndarray]) -> LayerFunction:
    return lambda inputs, config, weights: reduce(inputs)


def _sum(inputs: list[np.ndarray]) -> np.ndarray:
    total = inputs[0]
    for item in inputs[1:]:
        total = total + item
    return total


def _fold(operation: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> Callable[..., np.ndarray]:
    def reduce(inputs: list[np.ndarray]) -> np.ndarray:
        result = inputs[0]
        for item in inputs[1:]:
            result = operation(result, item)
        return result

    return reduce


def _pooling(rank: int, reduce: str) -> LayerFunction:
    return unary(lambda x, config, weights: _pool(x, config, rank, reduce))


def _global_pooling(reduce: Callable[..., np.ndarray]) -> LayerFunction:
    return unary(lambda x, config, weights: _global_pool(x, config, reduce))


_identity = unary(lambda x, config, weights: x)

FEEDFORWARD_LAYERS: dict[str, LayerFunction] = {
    "Dense": unary(dense),
    "Activation": unary(lambda x, c, w: get_activation(c["activation"])(x)),
    "ReLU": unary(relu_layer),
    "LeakyReLU": unary(lambda x, c, w: leaky_relu(x, c.get("negative_slope", 0.3))),
    "ELU": unary(lambda x, c, w: elu(x, c.get("alpha", 1.0))),
    "Softmax": unary(lambda x, c, w: softmax(x, axis=tuple(_norm_axes(c.get("axis", -1), x.ndim)))),
    "PReLU": unary(prelu),
    "Dropout": _identity,
    "SpatialDropout1D": _identity,
    "SpatialDropout2D": _identity,
    "SpatialDropout3D": _identity,
    "GaussianNoise": _identity,
    "GaussianDropout": _identity,
    "AlphaDropout": _identity,
    "ActivityRegularization": _identity,
    "Identity": _identity,
    "Flatten": unary(flatten),
    "Reshape": unary(reshape),
    "Permute": unary(permute),
    "Conv1D": unary(conv),
    "Conv2D": unary(conv),
    "Conv3D": unary(conv),
    "DepthwiseConv2D": unary(depthwise_conv),
    "SeparableConv2D": unary(separable_conv),
    "Conv1DTranspose": unary(conv_transpose),
    "Conv2DTranspose": unary(conv_transpose),
    "Conv3DTranspose": unary(conv_transpose),
    "MaxPooling1D": _pooling(1, "max"),
    "MaxPooling2D": _pooling(2, "max"),
    "MaxPooling3D": _pooling(3, "max"),
    "AveragePooling1D": _pooling(1, "average"),
    "AveragePooling2D": _pooling(2, "average"),
    "AveragePooling3D": _pooling(3, "average"),
    "GlobalAveragePooling1D": with_mask(global_average_pooling_1d),
    "GlobalAveragePooling2D": _global_pooling(np.mean),
    "GlobalAveragePooling3D": _global_pooling(np.mean),
    "GlobalMaxPooling1D": _global_pooling(np.max),
    "GlobalMaxPooling2D": _global_pooling(np.max),
    "GlobalMaxPooling3D": _global_pooling(np.max),
    # Its mask only weights the statistics it gathers in training.
    "BatchNormalization": with_mask(lambda x, c, w, mask: batch_norm(x, c, w)),
    "LayerNormalization": unary(layer_norm),
    "Rescaling": unary(rescaling),
    "Embedding": unary(embedding),
    "LayerScale": unary(layer_scale),
    "Normalization": unary(normalization),
    "ZeroPadding1D": unary(zero_padding),
    "ZeroPadding2D": unary(zero_padding),
    "ZeroPadding3D": unary(zero_padding),
    "Cropping1D": unary(cropping),
    "Cropping2D": unary(cropping),
    "Cropping3D": unary(cropping),
    "UpSampling1D": unary(up_sampling),
    "UpSampling2D": unary(up_sampling),
    "UpSampling3D": unary(up_sampling),
    "Resizing": unary(resizing),
    "CenterCrop": unary(center_crop),
    "RepeatVector": unary(repeat_vector),
    "Masking": unary(masking),
    "Add": _merge(_sum),
    "Subtract": _merge(lambda inputs: inputs[0] - inputs[1]),
    "Multiply": _merge(_fold(np.multiply)),
    "Average": _merge(lambda inputs: _sum(inputs) / inputs[0].dtype.type(len(inputs))),
    "Maximum": _merge(_fold(np.maximum)),
    "Minimum": _merge(_fold(np.minimum)),
    "Concatenate": lambda inputs, config, weights: np.concatenate(
        inputs, axis=config.get("axis", -1)
    ),
    "Dot": dot,
}
