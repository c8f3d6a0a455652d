"""Diagnosing one backend's outputs in one mode: every layer's local error, then the
hypotheses on the layers worse than rounding, within a time budget.

The local error recomputes each layer in float64 from the candidate's *own* inputs
(its outputs of the layers feeding it; in isolated mode, what it was fed: the
reference's outputs at its precision), so upstream drift neither hides a local bug
nor fakes one. Every candidate is judged against float32 rounding, the precision of the
Keras model it reproduces: a port storing float16 values is told so (float16-activations).
Only the first `samples` samples are used: a cause in a layer's definition shows in
every sample, and the cost stays a fraction of a run.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from workers.backends.numpy.layers import LayerConfigUnsupported
from workers.backends.numpy.port import LAYERS
from workers.backends.registry import Precision
from workers.diagnosis.envelope import all_finite, rounding_envelope
from workers.diagnosis.formats import UNIT_ROUNDOFF, to_float16
from workers.diagnosis.hypotheses import HYPOTHESES, Case, Hypothesis, Variant
from workers.diagnosis.precision import REDUCED, precision_envelope
from workers.engine.explanations import Explanation, LayerDiagnosis
from workers.engine.graph import LayerSpec, ModelGraph
from workers.engine.metrics import DEFAULT_THRESHOLDS, FLOAT32_TINY, VerdictThresholds
from workers.engine.results import Mode

log = logging.getLogger(__name__)

DIAGNOSIS_SAMPLES = 8
# The causes that are a backend's declared precision.
PRECISION_CAUSES: dict[str, frozenset[str]] = {
    "float16": frozenset({"float16-weights", "float16-activations"}),
    "bfloat16": frozenset({"bfloat16"}),
    "tf32": frozenset({"tf32-matmul"}),
    "int8": frozenset({"int8-quantization"}),
}
# A hypothesis must move the layer's output by more than this many rounding envelopes
# to explain anything: one that changes nothing (a zero bias dropped) explains nothing.
DISTINCT = 2.0


@dataclass
class Budget:
    """Seconds a run's diagnosis may take, shared by all of its backends and modes."""

    seconds: float
    started: float = field(default_factory=time.perf_counter)

    @property
    def spent(self) -> bool:
        return time.perf_counter() - self.started > self.seconds


def _norm(x: np.ndarray) -> float:
    """In C order whatever the array's layout (a transposed variant's output): the same
    sum, to the last bit, whether or not a mask flattened it first."""
    return float(np.linalg.norm(np.ravel(x)))


def _apart(a: np.ndarray, b: np.ndarray) -> float:
    """||a - b|| over every value, in C order (as a mask would flatten it)."""
    return _norm(np.subtract(a, b, order="C"))


def _no_slack(slack: np.ndarray | float) -> bool:
    return isinstance(slack, float) and slack == 0.0


def _allowed(case: Case, slack: np.ndarray | float) -> float:
    """||tolerance + slack|| over every value: the judge's bound when all are finite."""
    return case.tolerance_norm if _no_slack(slack) else _norm(case.tolerance + slack)


def _finite_pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, bool]:
    """a - b over the positions both are finite, and whether their non-finite positions
    agree: the same positions, whatever the kind (float16 textures turn an overflow into
    NaN where the arithmetic gives Inf)."""
    if all_finite(a) and all_finite(b):
        return (a - b).ravel(), True
    finite_a, finite_b = np.isfinite(a), np.isfinite(b)
    return (a - b)[finite_a & finite_b], bool(np.array_equal(finite_a, finite_b))


# Values compared first when telling whether a candidate is the exact output rounded to
# float32: a layer that is not usually differs among them, and the whole layer is then
# left uncompared.
IDENTITY_PREFIX = 1024


def _same_at_float32(candidate: np.ndarray, exact: np.ndarray, *, equal_nan: bool) -> bool:
    """Whether every candidate value is the exact one rounded to float32."""
    head = slice(None, IDENTITY_PREFIX)
    first = exact.flat[head].astype(np.float32)
    if not np.array_equal(candidate.flat[head], first, equal_nan=equal_nan):
        return False
    return np.array_equal(candidate, exact.astype(np.float32), equal_nan=equal_nan)


def local_verdict(
    candidate: np.ndarray,
    exact: np.ndarray,
    tolerance: np.ndarray,
    thresholds: VerdictThresholds,
) -> tuple[float, float, str]:
    """The layer's local rel_l2, the rel_l2 its rounding envelope allows, and its local
    verdict: 'rounding' within the envelope, else by the usual rel_l2 thresholds. Where
    every value is finite the arrays are measured whole (a mask would flatten them to the
    same values in the same order), each norm once."""
    errors, agree = _finite_pair(candidate, exact)
    whole = errors.size == exact.size
    if whole:
        kept_exact, kept_tolerance = exact, tolerance
    else:
        finite = np.isfinite(exact) & np.isfinite(candidate)
        kept_exact, kept_tolerance = exact[finite], tolerance[finite]
    reference = max(_norm(kept_exact), FLOAT32_TINY)
    error_norm, tolerance_norm = _norm(errors), _norm(kept_tolerance)
    rel_l2 = error_norm / reference
    bound = tolerance_norm / reference
    if not agree:
        verdict = "nonfinite"
    elif _same_at_float32(candidate, exact, equal_nan=not whole):
        verdict = "identical"
    elif error_norm <= tolerance_norm:
        verdict = "rounding"
    elif rel_l2 <= thresholds.reduced_precision:
        verdict = "reduced-precision"
    else:
        verdict = "mismatch"
    return rel_l2, bound, verdict


def _judge(case: Case, variant: Variant, storage: np.ndarray | float) -> tuple[float, bool]:
    """The candidate's rel_l2 against the variant, and whether the variant explains it:
    it changes the layer beyond rounding, and the candidate matches it within rounding
    plus the variant's own slack (its format's rounding, its int8 step)."""
    output = variant.output
    if output.shape != case.candidate.shape:
        return float("inf"), False
    slack = variant.slack + storage
    if case.finite and np.isfinite(output).all():
        # Every value finite (the usual case): no masks, and the envelope's norm kept.
        error = _apart(case.candidate, output)
        reference = max(_norm(output), FLOAT32_TINY)
        distinct = _apart(output, case.exact) > DISTINCT * case.tolerance_norm
        allowed = _allowed(case, slack)
        agree = True
    else:
        errors, agree = _finite_pair(case.candidate, output)
        finite = np.isfinite(case.candidate) & np.isfinite(output)
        reference = max(_norm(output[finite]), FLOAT32_TINY)
        error = _norm(errors)
        change, same_nonfinite = _finite_pair(output, case.exact)
        # Changing which values overflow is a change too (float16 turning a value into Inf).
        distinct = not same_nonfinite or _norm(change) > DISTINCT * case.tolerance_norm
        allowed = _norm((case.tolerance + slack)[finite])
    # ...and it must fit the candidate better than Keras's own layer does: a cause whose
    # slack is wide (an int8 step) must not take credit for an unrelated error.
    closer = not variant.must_beat_exact or error < case.unexplained_norm
    explains = agree and distinct and closer and error <= allowed
    if explains and variant.representable is not None:
        explains = bool(np.all(variant.representable(case.candidate)))
    return error / reference, explains


def _best(
    case: Case, variants: Iterable[Variant], allowance: np.ndarray | float, hypothesis: str
) -> Explanation | None:
    """The variant that explains the layer best (else the one closest to it)."""
    best: Explanation | None = None
    for variant in variants:
        rel_l2, explains = _judge(case, variant, allowance)
        if best is None or (explains, -rel_l2) > (best.explains, -best.rel_l2):
            best = Explanation(hypothesis, rel_l2, explains, variant.label)
    return best


# Samples a screened hypothesis's variants are first computed on.
SCREEN_SAMPLES = 1
# A variant is dropped only this far beyond the bound: computed over fewer samples and
# fewer kernels, its values may differ from the full computation's in the last bits.
SCREEN_MARGIN = 1.0 + 1e-9


def _screen(case: Case, hypothesis: Hypothesis, allowance: np.ndarray | float) -> set[str] | None:
    """The labels of the variants worth computing on every sample: those that may still
    explain the layer (a variant's error on the first sample alone is at most its error
    on all, so one already beyond what the whole layer allows, the variant adding no
    slack, cannot), and the one closest to the candidate on that sample, reported where
    none explains. None when screening cannot tell (a value not finite, too few
    samples)."""
    if not case.finite or len(case.candidate) <= SCREEN_SAMPLES:
        return None
    head = case.head(SCREEN_SAMPLES)
    allowed = _allowed(case, allowance) * SCREEN_MARGIN
    kept = set()
    closest, closest_rel_l2 = None, math.inf
    for variant in hypothesis.variants(head):
        if variant.output.shape != head.candidate.shape:
            if not _no_slack(variant.slack):
                kept.add(variant.label)
            continue
        error = _apart(head.candidate, variant.output)
        if error <= allowed or not _no_slack(variant.slack):
            kept.add(variant.label)
        rel_l2 = error / max(_norm(variant.output), FLOAT32_TINY)
        if rel_l2 < closest_rel_l2:
            closest, closest_rel_l2 = variant.label, rel_l2
    return kept if closest is None else kept | {closest}


def _tested(
    case: Case, budget: Budget, hypotheses: Iterable[Hypothesis], storage: np.ndarray | float
) -> list[Explanation]:
    """The best variant of each hypothesis that applies to the layer; one that cannot be
    computed for this layer's config is left out (logged), and none starts once the
    budget is spent."""
    found = []
    for hypothesis in hypotheses:
        if budget.spent:
            break
        allowance = 0.0 if hypothesis.precision else storage
        try:
            if not hypothesis.applies(case.layer):
                continue
            kept = _screen(case, hypothesis, allowance) if hypothesis.screened else None
            variants = hypothesis.variants(case, *([] if kept is None else [kept]))
            best = _best(case, variants, allowance, hypothesis.id)
        except Exception:  # one cause's failure must not cost the layer its others
            log.warning("%s on layer %s failed", hypothesis.id, case.layer.name, exc_info=True)
            continue
        if best is not None:
            found.append(best)
    return found


def explain(
    case: Case, budget: Budget, precision: Precision = "float32", *, within_precision: bool = False
) -> tuple[Explanation, ...]:
    """Every hypothesis that applies to the layer, its best variant each; explaining ones
    first, among them the backend's own declared precision (an int8 backend's output
    also fits float16's wider rounding, but int8 is what it computes in), then by
    rel_l2. A screened hypothesis computes on all samples only the variants its first
    sample left: none it drops can explain the layer, and where none explains, the
    closest reported is the closest of those it kept. Computing every variant on every
    sample for that (43 kernel layouts of each of cifar_cnn's convolutions) took 0.87 s
    of a float16 backend's 1.96 s diagnosis.

    `within_precision`: the layer's own error is within what the backend's declared
    precision allows (its verdict is 'reduced-precision', not a bug), so the causes of
    that precision are tested first, and the others only where none of them explains:
    tfjs-webgl-f16's diagnosis of dense10x50 took 16-17 ms with every cause tested on
    each of its eight drifting layers, 13 with the five precision causes alone, 7 with
    float16's two."""
    own = PRECISION_CAUSES.get(precision, frozenset())
    # A candidate that stores float16 values (float16 textures, a port saving halves) is
    # allowed float16 rounding under every definition cause, so its bugs are still named.
    with np.errstate(invalid="ignore"):
        narrow = bool(
            np.all((to_float16(case.candidate) == case.candidate) | ~np.isfinite(case.candidate))
        )
    storage = case.envelope_at(UNIT_ROUNDOFF["float16"]) if narrow else 0.0
    first = [h for h in HYPOTHESES if h.id in own] if within_precision else []
    found = _tested(case, budget, first, storage)
    if not any(explanation.explains for explanation in found):
        found += _tested(case, budget, [h for h in HYPOTHESES if h not in first], storage)
    return tuple(sorted(found, key=lambda e: (not e.explains, e.hypothesis not in own, e.rel_l2)))


def _inputs_of(
    layer: LayerSpec,
    mode: Mode,
    candidate: Mapping[str, np.ndarray],
    fed: Mapping[str, np.ndarray],
    samples: int,
    inputs: frozenset[str],
) -> list[np.ndarray] | None:
    """What the candidate's layer received: its own outputs upstream (accumulated), or the
    feed (isolated). In accumulated mode a float input the candidate did not output is
    unknown (a port that left a layer out): None, the layer is not diagnosed; the model's
    inputs and integer or boolean nodes (token ids, a TF.js mask node) come from the feed."""
    # What a backend is fed: float32 (float64 for a float64 one), never its storage dtype.
    precision = np.result_type(np.asarray(candidate[layer.name][:1]).dtype, np.float32)
    values = []
    for name in layer.inbound:
        if mode == "accumulated" and name in candidate:
            value = np.asarray(candidate[name][:samples])
        else:
            value = np.asarray(fed[name][:samples])
            if mode == "accumulated" and name not in inputs and value.dtype.kind == "f":
                return None
            value = value.astype(precision) if value.dtype.kind == "f" else value
        values.append(value.astype(np.float64))
    return values


def diagnose_outputs(
    graph: ModelGraph,
    candidate: Mapping[str, np.ndarray],
    fed: Mapping[str, np.ndarray],
    *,
    mode: Mode,
    budget: Budget,
    thresholds: VerdictThresholds = DEFAULT_THRESHOLDS,
    samples: int = DIAGNOSIS_SAMPLES,
    precision: Precision = "float32",
    grids: Mapping[str, tuple[float, float]] | None = None,
) -> dict[str, LayerDiagnosis]:
    """Each layer the candidate output: its local error and, where that is worse than
    rounding, the hypotheses ranked; for a backend of reduced nominal `precision`, the
    local rel_l2 that precision allows (`grids`: each layer's 8-bit output grid, when the
    backend reports it). `fed` holds the model's inputs and the reference's
    outputs (what an isolated run is fed, at the candidate's precision). Layers
    the numpy port cannot compute, and those past the budget, are left out."""
    found: dict[str, LayerDiagnosis] = {}
    pending: list[tuple[str, Case]] = []
    model_inputs = frozenset(layer.name for layer in graph.inputs)
    for layer in graph.compute_layers:
        if layer.name not in candidate or layer.class_name not in LAYERS or budget.spent:
            continue
        try:
            stored = np.asarray(candidate[layer.name][:samples])
            inputs = _inputs_of(layer, mode, candidate, fed, samples, model_inputs)
            if inputs is None:
                continue
            with np.errstate(all="ignore"):  # a candidate's Inf and NaN are its own to report
                exact, tolerance = rounding_envelope(
                    layer, inputs, UNIT_ROUNDOFF["float32"], thresholds.rounding
                )
        except LayerConfigUnsupported:
            continue
        except Exception:  # a layer the port cannot recompute stays undiagnosed, logged
            log.warning("local error of layer %s failed", layer.name, exc_info=True)
            continue
        values = stored.astype(np.float64)
        if exact.shape != values.shape:
            continue
        rel_l2, bound, verdict = local_verdict(values, exact, tolerance, thresholds)
        grid = None if grids is None else grids.get(layer.name)
        case = Case(graph, layer, inputs, values, exact, tolerance, grid)
        allowed = _precision_bound(case, precision) if precision in REDUCED else None
        found[layer.name] = LayerDiagnosis(rel_l2, bound, verdict, (), allowed)
        if found[layer.name].is_local_drift:
            pending.append((layer.name, case))
    for name, case in pending:
        local = found[name]
        with np.errstate(all="ignore"):
            diagnosis = (
                None
                if budget.spent
                else explain(case, budget, precision, within_precision=local.within_precision)
            )
        found[name] = dataclasses.replace(local, diagnosis=diagnosis)
    return found


def _precision_bound(case: Case, precision: Precision) -> float | None:
    """The local rel_l2 the backend's nominal precision allows this layer: what turns a
    quantized backend's far-drifted layer from 'mismatch' into 'reduced-precision'. None
    when it cannot be told (a layer it does not model, an infinite bound that would
    excuse any error): the layer then keeps the fixed thresholds."""
    try:
        with np.errstate(all="ignore"):
            envelope = precision_envelope(case, precision)
    except Exception:
        log.warning("%s envelope of layer %s failed", precision, case.layer.name, exc_info=True)
        return None
    if envelope is None:
        return None
    finite = np.isfinite(case.exact) & np.isfinite(case.candidate)
    bound = _norm(envelope[finite]) / max(_norm(case.exact[finite]), FLOAT32_TINY)
    return bound if np.isfinite(bound) else None
