"""Why a layer drifts, as plain records: its local error and the causes tested on it.

The records live in the engine so a comparison row can carry them; computing them
needs the numpy port and lives in `workers.diagnosis`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from workers.engine.metrics import DRIFT_VERDICTS


@dataclass(frozen=True)
class Explanation:
    """One hypothesis tested on one layer: the candidate's rel_l2 against the layer
    recomputed with the cause applied, and whether that accounts for the candidate."""

    hypothesis: str
    rel_l2: float
    explains: bool
    variant: str | None = None

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Explanation:
        return cls(values["hypothesis"], values["rel_l2"], values["explains"], values["variant"])

    def as_dict(self) -> dict[str, Any]:
        return {
            "hypothesis": self.hypothesis,
            "rel_l2": self.rel_l2,
            "explains": self.explains,
            "variant": self.variant,
        }


@dataclass(frozen=True)
class LayerDiagnosis:
    """A layer's own error (recomputed in float64 from the candidate's own inputs) and,
    when that is worse than rounding, the hypotheses tested, best first. `diagnosis` is
    None when the time budget ran out before the layer's turn."""

    local_rel_l2: float
    local_bound: float
    local_verdict: str
    diagnosis: tuple[Explanation, ...] | None
    # The local rel_l2 the backend's nominal precision allows (float16, TF32, int8
    # backends; workers.diagnosis.precision); None for float32 and float64 backends.
    precision_bound: float | None = None

    @property
    def explained_by(self) -> str | None:
        """The best explaining hypothesis; 'unexplained' when causes were tested and none
        explains; None when none was needed (or the budget ran out)."""
        if not self.diagnosis:
            return "unexplained" if self.diagnosis == () and self.is_local_drift else None
        best = self.diagnosis[0]
        return best.hypothesis if best.explains else "unexplained"

    def at_precision(self, verdict: str) -> str:
        """The verdict of a backend of reduced nominal precision on a layer that drifts.
        A quantized model's output drifts far past any fixed threshold by design; what
        is a bug is a layer that itself computes worse than its precision allows. So:
        'reduced-precision' while the layer's own error stays within that allowance
        (however far upstream drift has carried the output), 'mismatch' beyond."""
        if (
            self.precision_bound is None
            or verdict not in DRIFT_VERDICTS
            or verdict == "nonfinite"
            or self.local_verdict == "nonfinite"
        ):
            return verdict
        return "reduced-precision" if self.within_precision else "mismatch"

    @property
    def within_precision(self) -> bool:
        """Whether the layer's own error is within what its backend's reduced nominal
        precision allows (never for a float32 or float64 backend)."""
        return self.precision_bound is not None and self.local_rel_l2 <= self.precision_bound

    @property
    def is_local_drift(self) -> bool:
        return self.local_verdict in DRIFT_VERDICTS

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> LayerDiagnosis:
        found = values["diagnosis"]
        return cls(
            values["local_rel_l2"],
            values["local_bound"],
            values["local_verdict"],
            None if found is None else tuple(Explanation.from_dict(e) for e in found),
            values.get("precision_bound"),
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "local_rel_l2": self.local_rel_l2,
            "local_bound": self.local_bound,
            "local_verdict": self.local_verdict,
            "precision_bound": self.precision_bound,
            "diagnosis": None
            if self.diagnosis is None
            else [explanation.as_dict() for explanation in self.diagnosis],
            "explained_by": self.explained_by,
        }


# What a row says when it was not diagnosed (diagnosis off, or a layer the numpy port
# cannot recompute).
NOT_DIAGNOSED: dict[str, Any] = {
    "local_rel_l2": None,
    "local_bound": None,
    "local_verdict": None,
    "precision_bound": None,
    "diagnosis": None,
    "explained_by": None,
}
