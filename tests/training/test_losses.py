"""The class loss shared by training and retraining: class labels and clinicians' coarse labels."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from deepskin.core.labels import CLASSES, MALIGNANT_INDEX
from training.train import TARGETS, class_loss


def test_class_labels_alone_give_the_weighted_cross_entropy():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(12, len(CLASSES), generator=generator)
    y = torch.randint(0, len(CLASSES), (12,), generator=generator)
    weights = torch.rand(len(CLASSES), generator=generator) + 0.5
    expected = F.cross_entropy(logits, y, weight=weights, label_smoothing=0.1)
    assert torch.allclose(class_loss(logits, y, weights, 0.1), expected)


def test_a_coarse_label_trains_the_summed_probability_of_its_group_whatever_the_split_within_it():
    logits = torch.randn(1, len(CLASSES), requires_grad=True)
    loss = class_loss(logits, torch.tensor([TARGETS["malignant"]]), torch.ones(len(CLASSES)), 0.1)
    malignant = logits.softmax(1)[0, list(MALIGNANT_INDEX)].sum()
    assert torch.allclose(loss, -malignant.log())
    loss.backward()
    benign = [i for i in range(len(CLASSES)) if i not in MALIGNANT_INDEX]
    assert (logits.grad[0, list(MALIGNANT_INDEX)] < 0).all() and (logits.grad[0, benign] > 0).all()
