"""The generated C port of a model and its `c` and `c-fastmath` backends."""
