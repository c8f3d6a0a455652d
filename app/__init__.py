"""driftbench: how far a Keras model's numbers drift on each backend, and where it starts."""
