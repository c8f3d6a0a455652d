"""The engine's core: options, model graph and loading, inputs, metrics, comparison, run order.

Nothing here reads the service's settings or database (import-linter keeps it so)."""
