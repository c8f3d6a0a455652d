"""The data layer: the ORM, the data directory, every query (each owns its transaction)."""
