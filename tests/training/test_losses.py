"""The losses shared by training and retraining: class labels and clinicians' coarse labels, and the distillation
that keeps a retrained model's answers on replayed images."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from deepskin.core.labels import CLASSES, MALIGNANT_INDEX
from training.train import TARGETS, class_loss, distillation


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


def heads(n: int, seed: int) -> dict:
    generator = torch.Generator().manual_seed(seed)
    return {"logits": torch.randn(n, len(CLASSES), generator=generator), "lesion": torch.randn(n, generator=generator)}


def test_distillation_is_zero_when_the_student_answers_as_the_teacher_and_grows_as_it_moves():
    teacher, keep = heads(8, 0), torch.ones(8, dtype=torch.bool)
    assert distillation(teacher, teacher, keep, 2.0).abs() < 1e-6
    moved = {k: v + 0.5 * torch.randn(v.shape, generator=torch.Generator().manual_seed(1)) for k, v in teacher.items()}
    further = {k: teacher[k] + 2 * (moved[k] - teacher[k]) for k in teacher}
    assert 0 < distillation(moved, teacher, keep, 2.0) < distillation(further, teacher, keep, 2.0)


def test_distillation_reads_only_the_replayed_rows_so_the_new_labels_move_the_model_freely():
    teacher, student = heads(6, 0), heads(6, 1)
    replayed = torch.tensor([True, True, True, False, False, False])
    alike_on_replay = {k: torch.cat([teacher[k][:3], student[k][3:]]) for k in teacher}
    assert distillation(alike_on_replay, teacher, replayed, 2.0).abs() < 1e-6
    assert distillation(student, teacher, replayed, 2.0) > 0
    assert distillation(student, teacher, torch.zeros(6, dtype=torch.bool), 2.0) == 0
