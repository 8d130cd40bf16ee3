"""The pure core: image bytes in, assessment out. Imports numpy, Pillow, onnxruntime and the standard library only."""
