"""The library of concrete causes: each recomputes a layer with one cause applied.

A hypothesis yields variants (a kernel layout, a softmax axis, ...), each a
recomputed output and the extra error its own arithmetic allows (a format's rounding,
an int8 step). The ids are stable: the API, the CSV and the dashboards show them.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from workers.backends.numpy.activations import gelu, get_activation
from workers.backends.numpy.layers import _same_padding
from workers.diagnosis.envelope import (
    ACTIVATION_LAYERS,
    activation_of,
    apply_layer,
    function_of,
    pre_activation,
)
from workers.diagnosis.formats import (
    UNIT_ROUNDOFF,
    int8_per_sample,
    int8_weights,
    on_grid,
    quantization_grid,
    to_bfloat16,
    to_float16,
    to_tf32,
)
from workers.engine.graph import LayerSpec, ModelGraph


@dataclass(frozen=True)
class Case:
    """One layer of one candidate to explain, everything in float64."""

    graph: ModelGraph
    layer: LayerSpec
    inputs: list[np.ndarray]  # the candidate's own inputs to the layer
    candidate: np.ndarray
    exact: np.ndarray
    tolerance: np.ndarray  # float32 rounding's envelope on `exact` (workers.diagnosis.envelope)
    # The (step, offset) of the 8-bit grid the backend stores this output on, when the
    # backend says (a TFLite int8 tensor's scale); otherwise read from the values.
    grid: tuple[float, float] | None = None

    @cached_property
    def tolerance_norm(self) -> float:
        return float(np.linalg.norm(self.tolerance))

    @cached_property
    def finite(self) -> bool:
        """Whether the candidate's and Keras's values are all finite: then a variant's
        judge needs no masks."""
        return bool(np.isfinite(self.candidate).all() and np.isfinite(self.exact).all())

    @cached_property
    def unexplained_norm(self) -> float:
        """||candidate - exact|| where both are finite; infinite when their NaN and Inf
        sit in different places (then any cause that puts them right fits better)."""
        finite_c, finite_e = np.isfinite(self.candidate), np.isfinite(self.exact)
        if not np.array_equal(finite_c, finite_e):
            return float("inf")
        return float(np.linalg.norm((self.candidate - self.exact)[finite_c]))

    def head(self, samples: int) -> Case:
        """The same layer over its first samples only."""
        return Case(
            self.graph,
            self.layer,
            [x[:samples] for x in self.inputs],
            self.candidate[:samples],
            self.exact[:samples],
            self.tolerance[:samples],
            self.grid,
        )

    def envelope_at(self, unit: float) -> np.ndarray:
        """The rounding envelope at another format's unit roundoff (it is linear in u)."""
        return self.tolerance * (unit / UNIT_ROUNDOFF["float32"])


@dataclass(frozen=True)
class Variant:
    label: str | None
    output: np.ndarray
    # Error the hypothesis's own arithmetic adds beyond float32 rounding (elementwise).
    slack: np.ndarray | float = 0.0
    # Whether the candidate's values must lie in the hypothesis's number format.
    representable: Callable[[np.ndarray], np.ndarray] | None = None
    # Whether it must fit the candidate better than Keras's own layer. Not for a float
    # format's storage: there the candidate's own stored inputs are rounded copies, and
    # "within that format's rounding of Keras's layer" is the claim.
    must_beat_exact: bool = True


@dataclass(frozen=True)
class Hypothesis:
    id: str
    applies: Callable[[LayerSpec], bool]
    # The variants of a case; a screened hypothesis's also take the labels to compute.
    variants: Callable[..., Iterator[Variant]]
    # A number format: it models the candidate's rounding itself, with no allowance for
    # the candidate's storage.
    precision: bool = False
    # Many variants, each of no slack of its own: they are computed on the first sample
    # first, and only those that may still explain the layer on all (workers/diagnosis/
    # diagnose.py, `_screen`).
    screened: bool = False


CONVOLUTIONS = frozenset({"Conv1D", "Conv2D", "Conv3D", "DepthwiseConv2D", "SeparableConv2D"})
MAX_POOLINGS = frozenset({"MaxPooling1D", "MaxPooling2D", "MaxPooling3D"})
MATMULS = CONVOLUTIONS | {"Dense", "Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose"}


def _kernel_key(layer: LayerSpec) -> str:
    return "depthwise_kernel" if layer.class_name == "SeparableConv2D" else "kernel"


def _with_weight(layer: LayerSpec, key: str, value: np.ndarray) -> dict[str, np.ndarray]:
    return {**layer.weights, key: value}


def _kernel_transposed(case: Case) -> Iterator[Variant]:
    kernel = case.layer.weights["kernel"]
    fan_in, units = kernel.shape
    read_back = kernel.reshape(units, fan_in).T  # Keras's (in, out) bytes read as (out, in)
    written = kernel.T.reshape(fan_in, units)  # (out, in) bytes read as Keras's (in, out)
    for label, value in (
        ("(in,out) read as (out,in)", read_back),
        ("(out,in) read as (in,out)", written),
    ):
        yield Variant(
            label,
            apply_layer(case.layer, case.inputs, weights=_with_weight(case.layer, "kernel", value)),
        )


def _layout_names(rank: int) -> str:
    return {1: "WIO", 2: "HWIO", 3: "DHWIO"}[rank]


def _layouts(kernel: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """Keras's kernel bytes (HWIO) read in another axis order, and a kernel written in
    another order read as HWIO: every permutation, each distinct kernel once."""
    keras = _layout_names(kernel.ndim - 2)
    found: list[tuple[str, np.ndarray]] = []
    for order in itertools.permutations(range(kernel.ndim)):
        if order == tuple(range(kernel.ndim)):
            continue
        name = "".join(keras[i] for i in order)
        shape = [kernel.shape[i] for i in order]
        for label, value in (
            (f"{keras} read as {name}", kernel.reshape(shape).transpose(np.argsort(order))),
            (f"{name} read as {keras}", kernel.transpose(order).reshape(kernel.shape)),
        ):
            if not any(np.array_equal(value, other) for other in (kernel, *(v for _, v in found))):
                found.append((label, value))
    return found


# Output bytes of one batched convolution over stacked kernels.
STACKED_OUTPUT_BYTES = 256 * 1024 * 1024


def _conv_kernel_layout(case: Case, only: Collection[str] | None = None) -> Iterator[Variant]:
    """Every other layout of the kernel (those labelled in `only`, when given). A plain
    convolution is linear in its kernel, so the layouts run as one convolution over the
    kernels stacked along the filters (in chunks of bounded size); grouped, depthwise and
    separable ones run one by one."""
    layer, key = case.layer, _kernel_key(case.layer)
    layouts = [
        (label, value)
        for label, value in _layouts(layer.weights[key])
        if only is None or label in only
    ]
    if not layouts:
        return
    stackable = (
        layer.class_name in ("Conv1D", "Conv2D", "Conv3D")
        and int(layer.config.get("groups", 1)) == 1
        and activation_of(layer) not in ("softmax", "log_softmax")
    )
    if not stackable:
        for label, value in layouts:
            weights = _with_weight(layer, key, value)
            yield Variant(label, apply_layer(layer, case.inputs, weights=weights))
        return
    axis = 1 if layer.config.get("data_format") == "channels_first" else -1
    chunk = max(1, STACKED_OUTPUT_BYTES // max(case.exact.nbytes, 1))
    for start in range(0, len(layouts), chunk):
        part = layouts[start : start + chunk]
        weights = {key: np.concatenate([value for _, value in part], axis=-1)}
        if "bias" in layer.weights:
            weights["bias"] = np.tile(layer.weights["bias"], len(part))
        stacked = apply_layer(layer, case.inputs, weights={**layer.weights, **weights})
        for (label, _), output in zip(part, np.split(stacked, len(part), axis=axis), strict=True):
            yield Variant(label, output)


def _kernel_flipped(case: Case) -> Iterator[Variant]:
    """Convolution instead of cross-correlation: the kernel's window reversed."""
    key = _kernel_key(case.layer)
    kernel = case.layer.weights[key]
    flipped = kernel[tuple(slice(None, None, -1) for _ in range(kernel.ndim - 2))]
    yield Variant(
        None, apply_layer(case.layer, case.inputs, weights=_with_weight(case.layer, key, flipped))
    )


def _channels_first_output(case: Case) -> Iterator[Variant]:
    exact = case.exact
    if case.layer.config.get("data_format") == "channels_first":
        yield Variant("channels-last buffer", np.moveaxis(exact, 1, -1).reshape(exact.shape))
    else:
        yield Variant("channels-first buffer", np.moveaxis(exact, -1, 1).reshape(exact.shape))


def _other_order(x: np.ndarray, data_format: str | None) -> np.ndarray:
    """A feature map flattened in the other channel order than Keras's: Keras flattens
    channels-last order (a channels_first map moved to channels last first), a port in
    NCHW flattens its buffer as it lies."""
    if data_format == "channels_first":
        return x.reshape(x.shape[0], -1)
    return np.moveaxis(x, -1, 1).reshape(x.shape[0], -1)


def _flatten_order(case: Case) -> Iterator[Variant]:
    layer = case.layer
    if layer.class_name == "Flatten":
        x = case.inputs[0]
        if x.ndim >= 3:
            yield Variant(
                "channels-first flatten", _other_order(x, layer.config.get("data_format"))
            )
        return
    flatten = case.graph.layer(layer.inbound[0])
    if flatten.class_name != "Flatten":
        return
    shape = case.graph.layer(flatten.inbound[0]).output_shape
    if len(shape) < 3 or any(d is None for d in shape[1:]):
        return
    x = case.inputs[0]
    data_format = flatten.config.get("data_format")
    # The Dense's input as the map it came from, in Keras's layout, then the other order.
    grid = (
        x.reshape(x.shape[0], *shape[2:], shape[1])
        if data_format == "channels_first"
        else (x.reshape(x.shape[0], *shape[1:]))
    )
    if data_format == "channels_first":
        reordered = np.moveaxis(grid, -1, 1).reshape(x.shape)
    else:
        reordered = _other_order(grid, None)
    yield Variant("channels-first flatten feeding the Dense", apply_layer(layer, [reordered]))


def _applies_flatten_order(layer: LayerSpec) -> bool:
    """A Flatten, or a Dense whose input is a Flatten's (the graph says which: the Dense
    variant reads its source's input shape)."""
    return layer.class_name == "Flatten" or (
        layer.class_name == "Dense" and len(layer.inbound) == 1
    )


def _spatial_axes(layer: LayerSpec, ndim: int) -> list[int]:
    first = layer.config.get("data_format") == "channels_first"
    return list(range(2, ndim)) if first else list(range(1, ndim - 1))


def _window_spans(layer: LayerSpec, rank: int) -> tuple[list[int], list[int]]:
    if layer.class_name in MAX_POOLINGS:
        size = layer.config["pool_size"]
        windows = [int(size)] * rank if isinstance(size, int) else [int(s) for s in size]
        strides_value = layer.config.get("strides") or windows
        dilation = [1] * rank
    else:
        kernel = layer.weights[_kernel_key(layer)]
        windows = list(kernel.shape[:rank])
        strides_value = layer.config["strides"]
        dilation_value = layer.config.get("dilation_rate", 1)
        dilation = (
            [int(dilation_value)] * rank
            if isinstance(dilation_value, int)
            else list(dilation_value)
        )
    strides = (
        [int(strides_value)] * rank
        if isinstance(strides_value, int)
        else [int(s) for s in strides_value]
    )
    spans = [(w - 1) * d + 1 for w, d in zip(windows, dilation, strict=True)]
    return spans, strides


def _padded(layer: LayerSpec, x: np.ndarray, pads: list[tuple[int, int]]) -> np.ndarray:
    width = [(0, 0)] * x.ndim
    for axis, pad in zip(_spatial_axes(layer, x.ndim), pads, strict=True):
        width[axis] = pad
    fill = -np.inf if layer.class_name in MAX_POOLINGS else 0.0
    return np.pad(x, width, constant_values=fill)


def _same_pads(layer: LayerSpec, x: np.ndarray) -> list[tuple[int, int]]:
    axes = _spatial_axes(layer, x.ndim)
    spans, strides = _window_spans(layer, len(axes))
    return [_same_padding(x.shape[a], s, st) for a, s, st in zip(axes, spans, strides, strict=True)]


def _padding_same_vs_valid(case: Case) -> Iterator[Variant]:
    """A 'valid' layer computed with 'same' padding (the output loop over the model's
    output size, so the top-left of the 'same' result), or a 'same' layer computed
    without padding, reading zeros past the input's far edge."""
    layer, x = case.layer, case.inputs[0]
    valid = {**layer.config, "padding": "valid"}
    if layer.config["padding"] == "valid":
        same = apply_layer(layer, [x], {**layer.config, "padding": "same"})
        region = tuple(slice(0, n) for n in case.exact.shape)
        yield Variant("'same' computed, cropped to the 'valid' size", same[region])
    elif layer.config["padding"] == "same":
        pads = [(0, before + after) for before, after in _same_pads(layer, x)]
        yield Variant(
            "no padding, zeros past the far edge",
            apply_layer(layer, [_padded(layer, x, pads)], valid),
        )


def _padding_asymmetric(case: Case) -> Iterator[Variant]:
    """'same' with the odd pixel padded before (PyTorch's and Caffe's rule) instead of
    after (TensorFlow's)."""
    layer, x = case.layer, case.inputs[0]
    pads = _same_pads(layer, x)
    swapped = [(after, before) for before, after in pads]
    if swapped == pads:
        return
    valid = {**layer.config, "padding": "valid"}
    yield Variant("extra pixel before", apply_layer(layer, [_padded(layer, x, swapped)], valid))


def _bias_key(layer: LayerSpec) -> str:
    return "beta" if layer.class_name == "BatchNormalization" else "bias"


def _scaled_bias(factor: float, label: str | None) -> Callable[[Case], Iterator[Variant]]:
    def variants(case: Case) -> Iterator[Variant]:
        key = _bias_key(case.layer)
        weights = _with_weight(case.layer, key, case.layer.weights[key] * factor)
        yield Variant(label, apply_layer(case.layer, case.inputs, weights=weights))

    return variants


def _has_bias(layer: LayerSpec) -> bool:
    return _bias_key(layer) in layer.weights


def _bn_epsilon_missing(case: Case) -> Iterator[Variant]:
    yield Variant(None, apply_layer(case.layer, case.inputs, {**case.layer.config, "epsilon": 0.0}))


def _bn_variance_as_std(case: Case) -> Iterator[Variant]:
    """Through the port's own batch normalisation, with the variance it would divide by
    in place of the stored one."""
    variance = case.layer.weights["moving_variance"].astype(np.float64)
    epsilon = float(case.layer.config["epsilon"])
    no_epsilon = {**case.layer.config, "epsilon": 0.0}
    divided = _with_weight(case.layer, "moving_variance", (variance + epsilon) ** 2)
    yield Variant(
        "divided by variance + epsilon",
        apply_layer(case.layer, case.inputs, no_epsilon, divided),
    )
    squared = _with_weight(case.layer, "moving_variance", variance * variance)
    yield Variant(
        "variance squared as the variance", apply_layer(case.layer, case.inputs, weights=squared)
    )


def _replaced_activation(case: Case, function: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    z = (
        case.inputs[0]
        if case.layer.class_name in ACTIVATION_LAYERS
        else pre_activation(case.layer, case.inputs)
    )
    return function(z)


def _hard_sigmoid_keras2(case: Case) -> Iterator[Variant]:
    yield Variant(
        "clip(0.2x + 0.5, 0, 1)",
        _replaced_activation(case, lambda z: np.clip(0.2 * z + 0.5, 0.0, 1.0)),
    )


def _gelu_approximation(case: Case) -> Iterator[Variant]:
    """Keras's 'gelu' is the erf form; ports often write the tanh approximation."""
    yield Variant(
        "tanh approximation", _replaced_activation(case, lambda z: gelu(z, approximate=True))
    )


def _softmax_axis(case: Case) -> Iterator[Variant]:
    softmax = get_activation("softmax")
    axis_config = case.layer.config.get("axis", -1)
    axes = axis_config if isinstance(axis_config, list | tuple) else [axis_config]
    configured = {int(a) % case.exact.ndim for a in axes}
    for axis in range(case.exact.ndim):
        if {axis} != configured:
            yield Variant(
                f"axis {axis}", _replaced_activation(case, lambda z, a=axis: softmax(z, axis=a))
            )
    if case.exact.ndim > 2:
        yield Variant(
            "all axes of a sample",
            _replaced_activation(case, lambda z: softmax(z, axis=tuple(range(1, z.ndim)))),
        )


def _resize_axis(x: np.ndarray, axis: int, size: int, align_corners: bool) -> np.ndarray:
    length = x.shape[axis]
    if align_corners:
        source = np.arange(size) * ((length - 1) / (size - 1) if size > 1 else 0.0)
    else:
        source = np.arange(size) * (length / size)
    low = np.clip(np.floor(source).astype(int), 0, length - 1)
    high = np.clip(low + 1, 0, length - 1)
    shape = [1] * x.ndim
    shape[axis] = -1
    frac = (source - np.floor(source)).reshape(shape)
    return np.take(x, low, axis=axis) * (1 - frac) + np.take(x, high, axis=axis) * frac


def _upsampling_pixel_grid(case: Case) -> Iterator[Variant]:
    """Bilinear resizing on the legacy pixel grid (source = i * in / out, TF 1 and
    TF.js's default) or with aligned corners, instead of half-pixel centres."""
    x = case.inputs[0]
    for label, align in (("legacy grid", False), ("align corners", True)):
        out = x
        for axis in _spatial_axes(case.layer, x.ndim):
            out = _resize_axis(out, axis, case.exact.shape[axis], align)
        yield Variant(label, out)


def _applies_upsampling(layer: LayerSpec) -> bool:
    return layer.class_name in ("UpSampling1D", "UpSampling2D", "UpSampling3D") and (
        layer.config.get("interpolation") == "bilinear"
    )


def _activation_missing(case: Case) -> Iterator[Variant]:
    if case.layer.class_name in ACTIVATION_LAYERS:
        yield Variant(None, case.inputs[0])
    else:
        yield Variant(None, pre_activation(case.layer, case.inputs))


def _has_activation(layer: LayerSpec) -> bool:
    return function_of(layer) not in ("linear", "")


def _kernels(
    layer: LayerSpec, round_to: Callable[[np.ndarray], np.ndarray]
) -> dict[str, np.ndarray]:
    return {key: round_to(w) if "kernel" in key else w for key, w in layer.weights.items()}


def _float16_weights(case: Case) -> Iterator[Variant]:
    weights = {key: to_float16(w) for key, w in case.layer.weights.items()}
    yield Variant(None, apply_layer(case.layer, case.inputs, weights=weights))


def _stored_in(
    case: Case, round_to: Callable[[np.ndarray], np.ndarray], unit: float
) -> Iterator[Variant]:
    """The layer computed in float32 with its tensors stored in a narrow format: every
    tensor, inputs and weights too (float16 textures), or its output alone (a port that
    keeps float32 weights). The slack is what rounding at that format can do to the layer
    (its envelope at the format's unit roundoff): the candidate's stored inputs are
    themselves rounded copies of what it computed with."""
    check = _representable(round_to)
    slack = case.envelope_at(unit)
    everything = {key: round_to(w) for key, w in case.layer.weights.items()}
    narrow_inputs = [round_to(x) for x in case.inputs]
    yield Variant(
        "inputs, weights and output",
        round_to(apply_layer(case.layer, narrow_inputs, weights=everything)),
        slack,
        check,
        must_beat_exact=False,
    )
    yield Variant("output", round_to(case.exact), slack, check, must_beat_exact=False)


def _representable(
    round_to: Callable[[np.ndarray], np.ndarray],
) -> Callable[[np.ndarray], np.ndarray]:
    def check(values: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore"):
            return (round_to(values) == values) | ~np.isfinite(values)

    return check


def _float16_activations(case: Case) -> Iterator[Variant]:
    yield from _stored_in(case, to_float16, UNIT_ROUNDOFF["float16"])


def _bfloat16(case: Case) -> Iterator[Variant]:
    yield from _stored_in(case, to_bfloat16, UNIT_ROUNDOFF["bfloat16"])


def _tf32_matmul(case: Case) -> Iterator[Variant]:
    """The inputs of every product rounded to TF32 (10 mantissa bits), sums in float32."""
    weights = _kernels(case.layer, to_tf32)
    yield Variant(None, apply_layer(case.layer, [to_tf32(x) for x in case.inputs], weights=weights))


def _int8_quantization(case: Case) -> Iterator[Variant]:
    """Weights per channel in int8 (TFLite's scheme), the inputs as they are or quantized
    per sample on the fly (dynamic range) and, when the candidate's outputs sit on an
    8-bit grid, the output requantized to it."""
    layer = case.layer
    weights = (
        {
            key: int8_weights(
                w, depthwise=layer.class_name == "DepthwiseConv2D" or "depthwise" in key
            )
            if "kernel" in key
            else w
            for key, w in layer.weights.items()
        }
        if layer.class_name in MATMULS
        else layer.weights
    )
    out = apply_layer(layer, case.inputs, weights=weights)
    grid = case.grid or quantization_grid(case.candidate)
    if grid is None:
        if layer.class_name in MATMULS:
            yield Variant("int8 weights", out)
            if len(case.inputs) == 1:
                narrow = [int8_per_sample(case.inputs[0])]
                yield Variant(
                    "int8 weights, inputs quantized per sample (dynamic range)",
                    apply_layer(layer, narrow, weights=weights),
                )
        return
    step, low = grid
    # Half a step: where rounding to the grid can move a value.
    label = f"int8 weights, 8-bit outputs (step {step:.3g})"
    # A grid the backend declared (a TFLite int8 tensor's scale) is evidence enough that
    # the layer is quantized: its lookup-table activations need not beat Keras's layer.
    yield Variant(
        label,
        on_grid(out, step, low),
        step / 2,
        _on_grid_check(step, low),
        must_beat_exact=case.grid is None,
    )


def _on_grid_check(step: float, low: float) -> Callable[[np.ndarray], np.ndarray]:
    def check(values: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore"):
            return (np.abs(on_grid(values, step, low) - values) <= 0.05 * step) | ~np.isfinite(
                values
            )

    return check


def _any(layer: LayerSpec) -> bool:
    return True


def _has_weights(layer: LayerSpec) -> bool:
    return bool(layer.weights)


def _classes(*names: str) -> Callable[[LayerSpec], bool]:
    allowed = frozenset(names)
    return lambda layer: layer.class_name in allowed


def _convolution(layer: LayerSpec) -> bool:
    return layer.class_name in CONVOLUTIONS


def _padded_window(layer: LayerSpec) -> bool:
    return (
        layer.class_name in CONVOLUTIONS or layer.class_name in MAX_POOLINGS
    ) and layer.config.get("padding") in ("same", "valid")


def _spatial_output(layer: LayerSpec) -> bool:
    shape = layer.output_shape
    return len(shape) >= 3 and all(d is not None and d > 1 for d in shape[1:])


def _function_is(name: str) -> Callable[[LayerSpec], bool]:
    return lambda layer: function_of(layer) == name


HYPOTHESES: tuple[Hypothesis, ...] = (
    # Layout: the right numbers in the wrong places.
    Hypothesis("kernel-transposed", _classes("Dense"), _kernel_transposed),
    Hypothesis("conv-kernel-layout", _convolution, _conv_kernel_layout, screened=True),
    Hypothesis("channels-first-output", _spatial_output, _channels_first_output),
    Hypothesis("flatten-order", _applies_flatten_order, _flatten_order),
    Hypothesis("kernel-flipped", _convolution, _kernel_flipped),
    # Arithmetic definition: another formula than Keras's.
    Hypothesis("padding-same-vs-valid", _padded_window, _padding_same_vs_valid),
    Hypothesis(
        "padding-asymmetric",
        lambda layer: _padded_window(layer) and layer.config["padding"] == "same",
        _padding_asymmetric,
    ),
    Hypothesis("bias-missing", _has_bias, _scaled_bias(0.0, None)),
    Hypothesis("bias-doubled", _has_bias, _scaled_bias(2.0, None)),
    Hypothesis("bn-epsilon-missing", _classes("BatchNormalization"), _bn_epsilon_missing),
    Hypothesis("bn-variance-as-std", _classes("BatchNormalization"), _bn_variance_as_std),
    Hypothesis("hard-sigmoid-keras2", _function_is("hard_sigmoid"), _hard_sigmoid_keras2),
    Hypothesis("gelu-approximation", _function_is("gelu"), _gelu_approximation),
    Hypothesis("softmax-axis", _function_is("softmax"), _softmax_axis),
    Hypothesis("upsampling-pixel-grid", _applies_upsampling, _upsampling_pixel_grid),
    Hypothesis("activation-missing", _has_activation, _activation_missing),
    # Precision: Keras's formula in a narrower number format.
    Hypothesis("float16-weights", _has_weights, _float16_weights, precision=True),
    Hypothesis("float16-activations", _any, _float16_activations, precision=True),
    Hypothesis("bfloat16", _any, _bfloat16, precision=True),
    Hypothesis("tf32-matmul", _classes(*MATMULS), _tf32_matmul, precision=True),
    Hypothesis("int8-quantization", _any, _int8_quantization, precision=True),
)
HYPOTHESIS_IDS: tuple[str, ...] = tuple(h.id for h in HYPOTHESES)
