"""`keras-gpu` and `keras-gpu-fp32`: Keras on a GPU in a child process."""
