"""Where a model's files are: the ONNX file, its card beside it, and the model shipped with the code.

Standard library only, so that what reads cards and registry records (the operator page, the retrain
trigger's neighbours) does not load numpy or onnxruntime.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

BUNDLED_MODEL = Path(__file__).resolve().parents[2] / "models" / "deepskin.onnx"


def card_path(onnx_path: str | os.PathLike) -> Path:
    return Path(onnx_path).with_suffix(".card.json")


def load_card(onnx_path: str | os.PathLike) -> dict:
    """The card beside an ONNX file: its version, preprocessing contract, thresholds and measured numbers."""
    return json.loads(card_path(onnx_path).read_text(encoding="utf-8"))
