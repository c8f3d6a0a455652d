"""`tflite`, `tflite-f16`, `tflite-dynamic`, `tflite-int8`: TFLite converted models on LiteRT."""
