"""`numpy` and `numpy-f64`: our own port of each layer."""
