"""Training, evaluation and export of the DeepSkin model (PyTorch lives only here)."""
