"""ONNX export: onnxruntime must agree with torch, and the card contract must hold."""

import numpy as np
import torch

from deepskin.labels import CLASSES
from deepskin.model import Model
from deepskin.preprocess import Preprocess
from training.data import data_root, image_paths, load_split
from training.export import PARITY_TOLERANCE, batches, export_onnx, ood_fit_rows, ood_scorer, parity, pooled_features
from training.net import LiteConfig, pretrained


def test_onnx_matches_torch_on_32_test_images(tmp_path):
    torch.manual_seed(0)
    net = pretrained(LiteConfig()).eval()  # ImageNet backbone, random head: parity is about the graph
    spec = Preprocess(image_size=96)
    split, paths = load_split(), image_paths(data_root())
    fit = ood_fit_rows(split, per_class=30)
    labels = np.array([CLASSES.index(d) for d in fit.dx])
    served = ood_scorer(net, pooled_features(net, [paths[i] for i in fit.image_id], spec), labels).eval()
    export_onnx(served, spec.image_size, tmp_path / "m.onnx")
    card = {"version": "test", "classes": ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"],
            "preprocess": spec.to_dict(), "thresholds": {"low": 0.1, "high": 0.5}}
    model = Model(tmp_path / "m.onnx", card)
    x = next(batches([paths[i] for i in split.image_id[split.split == "test"].head(32)], spec, size=32))
    assert len(x) == 32
    assert parity(served, model, x) <= PARITY_TOLERANCE
    with torch.no_grad():
        _, cam_t, ood_t = served(torch.from_numpy(x))
    scores = model.score(x)
    np.testing.assert_allclose(scores.cam, cam_t.numpy(), rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(scores.ood, ood_t.numpy(), rtol=1e-3)
    assert model.score(x[:1]).logits.shape == (1, 7)  # dynamic batch
