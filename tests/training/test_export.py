"""ONNX export: onnxruntime must agree with torch on every output, and the card contract must hold."""

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from deepskin.core.bundle import BUNDLED_MODEL
from deepskin.core.model import Model
from deepskin.core.patient import PatientInfo
from deepskin.core.preprocess import Preprocess, model_input
from training import sources
from training.export import PARITY_TOLERANCE, batches, export_onnx, ood_fit_rows, ood_scorer, parity, pooled_features
from training.net import LiteConfig, pretrained
from training.promote import SHIPPED_CHECKPOINTS
from training.train import load_model, patient_vectors

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
LESIONS, PHONE = FIXTURES / "lesions", FIXTURES / "phone"


def test_onnx_matches_torch_on_32_test_images(tmp_path):
    torch.manual_seed(0)
    # ImageNet backbone, random heads: parity is about the graph.
    net = pretrained(LiteConfig(meta_dim=18, aux_heads=True, colour_constancy=True)).eval()
    torch.nn.init.normal_(net._meta[2].weight)  # a trained network's patient path is not zero
    spec = Preprocess(image_size=96)
    table = sources.table(["ham10000"])
    fit = ood_fit_rows(table, per_class=30)
    labels = np.unique(fit.source + "/" + fit.dx, return_inverse=True)[1]
    served = ood_scorer(net, pooled_features(net, list(fit.path), spec), labels).eval()
    export_onnx(served, spec.image_size, tmp_path / "m.onnx")
    card = {"version": "test", "classes": ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"],
            "preprocess": spec.to_dict()}
    model = Model(tmp_path / "m.onnx", card)
    test = table[table.split == "test"].head(32)
    x = next(batches(list(test.path), spec, size=32))
    patients = patient_vectors(test).numpy()
    assert len(x) == 32 and patients.any()  # HAM10000 records age, sex and site for these
    assert parity(served, model, x, patients) <= PARITY_TOLERANCE
    with torch.no_grad():
        _, cam_t, ood_t, lesion_t, clinical_t = served(torch.from_numpy(x), torch.from_numpy(patients))
    scores = model.score(x, patients)
    np.testing.assert_allclose(scores.cam, cam_t.numpy(), rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(scores.ood, ood_t.numpy(), rtol=1e-3)
    np.testing.assert_allclose(scores.not_lesion, torch.sigmoid(-lesion_t).numpy(), rtol=1e-3, atol=1e-6)
    expected_type = np.where(torch.sigmoid(clinical_t).numpy() >= 0.5, "clinical", "dermoscopy")
    assert (scores.image_type == expected_type).all()
    assert model.score(x[:1]).logits.shape == (1, 7)  # dynamic batch; no patient vector means all unknown
    # The patient input is wired through: the same image with other facts gets other logits.
    older = np.stack([PatientInfo(age=85, sex="male", site="face").vector()] * 2)
    assert not np.allclose(model.score(x[:2], older).logits, model.score(x[:2], patients[:2]).logits)


def test_the_shipped_checkpoint_is_the_shipped_model():
    """training/checkpoints/<version>.pt, where the first retrain starts, holds the very weights of the ONNX in
    models/: the same class logits on real lesions and phone photos, with and without patient facts."""
    served = Model(BUNDLED_MODEL)
    net, ckpt = load_model(SHIPPED_CHECKPOINTS / f"{served.version}.pt")
    assert Preprocess.from_dict(ckpt["preprocess"]) == served.spec
    paths = sorted(LESIONS.glob("*.jpg"))[:4] + sorted(PHONE.glob("*.jpg"))[:4]
    x = np.stack([model_input(Image.open(path), served.spec) for path in paths])
    facts = np.stack([PatientInfo.parse(60, "female", "back").vector()] * len(x))
    for patients in (np.zeros_like(facts), facts):
        with torch.no_grad():
            logits = net(torch.from_numpy(x), torch.from_numpy(patients)).numpy()
        assert np.abs(logits - served.score(x, patients).logits).max() < 1e-4
