"""Why a layer drifts: its local error (recomputed in float64 from the candidate's own
inputs) judged against what rounding can produce, and a library of concrete causes
tested on every layer worse than rounding. Built on the numpy port, which is why it
sits above `workers.backends` and below the jobs that call it."""
