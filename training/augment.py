"""Images held in memory at the canonical scale, and augmentation as tensor operations (CPU or GPU).

Every image is decoded once through the serving contract (`deepskin.core.preprocess.canonical`: upright RGB,
shorter side 150) onto a fixed landscape canvas (150 x 200; portrait photos are turned a right angle,
which changes nothing for a lesion; photos wider than 4:3 are centre-cropped, narrower ones
reflect-padded). A batch is then cut out by one affine resampling per image, on whatever device trains:
  - validation: the centre square resized to the input size, exactly what serving feeds the model;
  - training: random scale, aspect, position, any rotation and mirror (skin has no up), then light,
    colour temperature, saturation, contrast, blur, sensor noise and resolution loss, the ways phone
    photos and other dermatoscopes differ from HAM10000's; a lesion shrunk into its surroundings, and the
    rings, rulers, grids and pen marks that lie over real lesion photos.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F

from deepskin.core.preprocess import Preprocess, canonical, to_rgb


def canvas_size(spec: Preprocess) -> tuple[int, int]:
    return spec.canonical_short_side, round(spec.canonical_short_side * 4 / 3)


def _on_canvas(path: Path, spec: Preprocess, crop: tuple | None = None) -> tuple[np.ndarray, int]:
    height, width = canvas_size(spec)
    with Image.open(path) as image:
        image = to_rgb(image)
        if isinstance(crop, tuple):  # a box of fractions (left, top, right, bottom): a source's watermark cut away
            w, h = image.size
            image = image.crop((round(crop[0] * w), round(crop[1] * h), round(crop[2] * w), round(crop[3] * h)))
        image = canonical(image, spec)
    if image.height > image.width:
        image = image.transpose(Image.ROTATE_90)
    if image.height != height:  # smaller than the canonical scale: brought up to it, as the model sees it
        image = image.resize((max(height, round(image.width * height / image.height)), height), Image.BILINEAR)
    arr = np.asarray(image)
    if arr.shape[1] > width:
        left = (arr.shape[1] - width) // 2
        arr = arr[:, left:left + width]
    valid = arr.shape[1]
    if valid < width:
        arr = np.pad(arr, ((0, 0), (0, width - valid), (0, 0)), mode="reflect")
    return arr, valid


def load_canvas(paths: list[Path], spec: Preprocess, crops: list | None = None,
                workers: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 3, 150, 200) uint8 images and (N,) the width of each that is real (the rest is reflection)."""
    crops = crops if crops is not None else [None] * len(paths)
    with ThreadPoolExecutor(workers) as pool:  # PIL decodes without the GIL
        loaded = list(pool.map(lambda pc: _on_canvas(Path(pc[0]), spec, pc[1]), zip(paths, crops)))
    images = torch.from_numpy(np.stack([a for a, _ in loaded])).permute(0, 3, 1, 2).contiguous()
    return images, torch.tensor([v for _, v in loaded], dtype=torch.float32)


def _sample(images: torch.Tensor, centre: torch.Tensor, size: torch.Tensor, angle: torch.Tensor,
            mirror: torch.Tensor, out: int) -> torch.Tensor:
    """Resample each image's rotated box (centre, size in canvas pixels) to out x out, bilinear."""
    _, _, height, width = images.shape
    cos, sin = torch.cos(angle), torch.sin(angle)
    half_w, half_h = size[:, 0] / 2 * mirror, size[:, 1] / 2
    theta = torch.stack([
        torch.stack([2 / width * half_w * cos, -2 / width * half_h * sin, 2 * centre[:, 0] / width - 1], 1),
        torch.stack([2 / height * half_w * sin, 2 / height * half_h * cos, 2 * centre[:, 1] / height - 1], 1),
    ], 1)
    grid = F.affine_grid(theta, [len(images), 3, out, out], align_corners=False)
    return F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def centre_view(images: torch.Tensor, valid: torch.Tensor, out: int) -> torch.Tensor:
    """Serving's view in pixel values 0-255: the centre square of the real part, resized to out."""
    n, height = len(images), images.shape[2]
    ones = torch.ones(n, device=images.device)
    centre = torch.stack([valid / 2, ones * height / 2], 1)
    return _sample(images, centre, torch.stack([ones * height, ones * height], 1), 0 * ones, ones, out)


def _blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Gaussian blur with a sigma per image (a separable depthwise convolution)."""
    n, c, h, w = x.shape
    radius = 4
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    kernel = torch.exp(-t[None] ** 2 / (2 * sigma[:, None] ** 2))
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (n*c, k)
    y = F.pad(x.reshape(1, n * c, h, w), [radius] * 4, mode="reflect")
    y = F.conv2d(y, kernel[:, None, :, None], groups=n * c)
    y = F.conv2d(y, kernel[:, None, None, :], groups=n * c)
    return y.reshape(n, c, h, w)


def random_view(images: torch.Tensor, valid: torch.Tensor, out: int, generator: torch.Generator) -> torch.Tensor:
    """A training view in pixel values 0-255: geometry, then photometric changes."""
    n, device, height = len(images), images.device, images.shape[2]

    def uniform(low: float, high: float, size: int = n) -> torch.Tensor:
        return torch.rand(size, generator=generator, device=device) * (high - low) + low

    def chance(p: float) -> torch.Tensor:
        return torch.rand(n, generator=generator, device=device) < p

    area = valid * height * uniform(0.3, 1.0)
    ratio = torch.exp(uniform(math.log(3 / 4), math.log(4 / 3)))
    box_w = torch.minimum(torch.sqrt(area * ratio), valid)
    box_h = torch.clamp(torch.sqrt(area / ratio), max=height)
    centre = torch.stack([box_w / 2 + uniform(0, 1) * (valid - box_w), box_h / 2 + uniform(0, 1) * (height - box_h)], 1)
    mirror = torch.where(chance(0.5), -1.0, 1.0)
    x = _sample(images, centre, torch.stack([box_w, box_h], 1), uniform(0, 2 * math.pi), mirror, out)

    shape = (n, 1, 1, 1)
    x = x * uniform(0.7, 1.3).view(shape)  # exposure
    temperature = uniform(-0.15, 0.15)  # warm or cold light: red and blue move apart
    x = x * torch.stack([1 + temperature, torch.ones_like(temperature), 1 - temperature], 1).view(n, 3, 1, 1)
    grey = x.mean(1, keepdim=True)
    x = grey + (x - grey) * uniform(0.6, 1.4).view(shape)  # saturation
    mean = x.mean((1, 2, 3), keepdim=True)
    x = mean + (x - mean) * uniform(0.7, 1.3).view(shape)  # contrast
    blurred = _blur(x, uniform(0.4, 1.6))
    x = torch.where(chance(0.25).view(shape), blurred, x)  # phone focus and motion
    small = F.interpolate(F.interpolate(x, scale_factor=0.5, mode="bilinear", antialias=True), size=out, mode="bilinear")
    x = torch.where(chance(0.2).view(shape), small, x)  # a lesion that filled few pixels
    noise = torch.randn(x.shape, generator=generator, device=device) * uniform(0, 8).view(shape)
    x = x + torch.where(chance(0.25).view(shape), noise, torch.zeros_like(noise))  # sensor noise
    x = torch.where(chance(0.2).view(shape), zoom_out(x, uniform(0.3, 0.8), uniform(-1, 1, 2 * n).view(n, 2)), x)
    return overlays(x.clamp(0, 255), generator)


def zoom_out(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """The view shrunk to `scale` of the frame at a random place, on its own blurred colours: a lesion small in
    a photo of the skin around it, as clinic cameras and phones take them."""
    n, _, out, _ = x.shape
    theta = torch.zeros(n, 2, 3, device=x.device)
    theta[:, 0, 0] = theta[:, 1, 1] = 1 / scale
    theta[:, :, 2] = shift * (1 / scale - 1)[:, None]  # keeps the shrunk view inside the frame
    grid = F.affine_grid(theta, [n, 3, out, out], align_corners=False)
    small = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    inside = F.grid_sample(torch.ones_like(x[:, :1]), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    surround = F.interpolate(F.adaptive_avg_pool2d(x, 3), size=out, mode="bilinear", align_corners=False)
    return small + (1 - inside) * surround


def overlays(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """What sits on top of real lesion photos and must not decide "a lesion or not": a dermoscope's dark ring,
    a ruler's or a grid's lines, a marker pen's circle. Drawn on every kind of image, lesions and not."""
    n, device, out = len(x), x.device, x.shape[-1]

    def uniform(low: float, high: float) -> torch.Tensor:
        return (torch.rand(n, generator=generator, device=device) * (high - low) + low).view(n, 1, 1, 1)

    def chance(p: float) -> torch.Tensor:
        return (torch.rand(n, generator=generator, device=device) < p).view(n, 1, 1, 1)

    t = (torch.arange(out, device=device, dtype=x.dtype) + 0.5) / out * 2 - 1  # pixel centres in [-1, 1]
    py, px = t.view(1, 1, out, 1), t.view(1, 1, 1, out)
    radius = ((px - uniform(-0.15, 0.15)) ** 2 + (py - uniform(-0.15, 0.15)) ** 2).sqrt()
    ring = chance(0.12) & (radius > uniform(0.8, 1.2))  # a circular field of view, dark outside
    x = torch.where(ring, x * uniform(0.0, 0.15), x)
    angle = uniform(0, math.pi)
    along, across = px * angle.cos() + py * angle.sin(), py * angle.cos() - px * angle.sin()
    spacing, width = uniform(0.06, 0.2), uniform(0.008, 0.02)
    ticks = (along / spacing).frac().abs() * spacing < width
    ruler = chance(0.12) & ticks & (across > uniform(0.4, 0.9))  # ticks along one edge
    grid = chance(0.06) & (ticks | ((across / spacing).frac().abs() * spacing < width))  # lines both ways
    ink_colour = torch.stack([uniform(0, 120), uniform(0, 60), uniform(60, 200)], 1).view(n, 3, 1, 1)
    line_colour = torch.where(chance(0.5), uniform(0, 40), uniform(200, 255)).expand(n, 3, 1, 1)
    x = torch.where(ruler | grid, line_colour, x)
    ink = chance(0.08) & ((radius - uniform(0.4, 0.8)).abs() < uniform(0.01, 0.03))  # a pen circle
    return torch.where(ink, ink_colour, x)


def normalise(x: torch.Tensor, spec: Preprocess) -> torch.Tensor:
    mean = torch.tensor(spec.mean, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std
