"""Plain JSON values from numpy scalars and non-finite floats.

JSON has no Infinity or NaN, yet sqnr_db is +inf for identical outputs: non-finite
floats are written as the strings "inf", "-inf" and "nan", everywhere driftbench
writes JSON (reports, API answers, stored environments).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value
