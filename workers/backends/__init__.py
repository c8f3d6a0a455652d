"""The backends: one module (or one folder for a family) per backend, one line each in
`registry.py`. Importing this package imports none of them."""
