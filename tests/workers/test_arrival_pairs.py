"""What each backend compares as it arrives: over every order the backends can be stored
in, every pair a run must compare (each backend with the reference, each with every
`compare_against` target) is compared once, by one of its two backends."""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path

from workers.engine.sequence import RunOrder
from workers.jobs import RunPlan, arrival_pairs

REFERENCE = "numpy-f64"
OTHERS = ["keras-cpu", "numpy", "tfjs-cpu", "tflite-int8"]


def plan(compare_against: tuple[str, ...]) -> RunPlan:
    return RunPlan(
        run_id=1,
        model_path=Path("model.keras"),
        inputs_sha256="0" * 64,
        order=RunOrder.of(REFERENCE, OTHERS),
        modes=("accumulated",),
        repeats=1,
        compare_against=compare_against,
    )


def compared(run: RunPlan, stored_in: list[str]) -> Counter[tuple[str, str]]:
    """(target, candidate) pairs compared when the backends are stored in this order, each
    told the ones stored before it, as app/data/runs.record_stored tells them."""
    pairs: Counter[tuple[str, str]] = Counter()
    for index, backend in enumerate(stored_in):
        found = arrival_pairs(run, backend, stored_in[:index])
        if found:  # the reference's outputs feed every diagnosis: it must be stored
            assert REFERENCE in [*stored_in[:index], backend], (backend, stored_in)
        for target, candidates in found.items():
            pairs.update((target, candidate) for candidate in candidates)
    return pairs


def test_every_pair_is_compared_once_whatever_order_backends_are_stored_in() -> None:
    """The reference included: without the isolated mode it may be stored after others."""
    backends = [REFERENCE, *OTHERS]
    for targets in [(), ("keras-cpu",), ("keras-cpu", "tfjs-cpu")]:
        run = plan(targets)
        # Rows against the reference and against each target, of every other backend.
        wanted = Counter((t, b) for t in [REFERENCE, *targets] for b in backends if b != t)
        for stored_in in itertools.permutations(backends):
            assert compared(run, list(stored_in)) == wanted, (targets, stored_in)


def test_a_target_stored_after_others_compares_them_with_itself() -> None:
    run = plan(("keras-cpu",))
    assert arrival_pairs(run, "keras-cpu", [REFERENCE, "tfjs-cpu", "numpy"]) == {
        REFERENCE: ["keras-cpu"],
        "keras-cpu": [REFERENCE, "numpy", "tfjs-cpu"],
    }
    assert arrival_pairs(run, "tfjs-cpu", [REFERENCE, "keras-cpu"]) == {
        REFERENCE: ["tfjs-cpu"],
        "keras-cpu": ["tfjs-cpu"],
    }
    assert arrival_pairs(run, REFERENCE, []) == {}
    # Stored before the reference, a target waits for it, and it compares them all.
    assert arrival_pairs(run, "tfjs-cpu", ["keras-cpu"]) == {}
    assert arrival_pairs(run, REFERENCE, ["tfjs-cpu", "keras-cpu"]) == {
        "keras-cpu": [REFERENCE, "tfjs-cpu"],
        REFERENCE: ["keras-cpu", "tfjs-cpu"],
    }
