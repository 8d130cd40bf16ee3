"""The plain-PyTorch EfficientNet-Lite really is the published ImageNet network."""

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.data import coffee

from training.net import LiteConfig, load_imagenet, pretrained

ESPRESSO = 967  # ImageNet class index


@pytest.mark.parametrize("variant,size", [("lite0", 224)])
def test_strict_load_classifies_coffee_as_espresso(variant, size):
    model = load_imagenet(variant).eval()  # load_state_dict(strict=True) inside
    image = np.asarray(Image.fromarray(coffee()).resize((size, size), Image.BICUBIC), np.float32)
    x = torch.from_numpy((image - 127.0) / 128.0).permute(2, 0, 1)[None]
    with torch.no_grad():
        probs = model(x).softmax(1)[0]
    assert int(probs.argmax()) == ESPRESSO
    assert probs[ESPRESSO] > 0.5


def test_lite0_parameter_count_matches_the_checkpoint():
    assert sum(p.numel() for p in load_imagenet("lite0").parameters()) == 4_652_008


def test_pretrained_backbone_gets_a_fresh_seven_class_head():
    model = pretrained(LiteConfig())
    assert model._fc.out_features == 7
    assert torch.equal(model._conv_stem.weight, load_imagenet("lite0")._conv_stem.weight)
