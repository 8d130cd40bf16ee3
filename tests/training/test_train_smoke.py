"""A real (tiny) training run: checkpoints that carry their config, and resume."""

import json

import torch

from training import train as train_module
from training.net import LiteConfig, pretrained
from training.train import TrainConfig, head_outputs, load_model, native_bfloat16, train

SMOKE = "training/configs/smoke.json"


def test_smoke_training_writes_resumable_checkpoints(tmp_path):
    config = TrainConfig.load(SMOKE, [])
    best = train(config, {}, tmp_path, resume=False)
    model, ckpt = load_model(best)
    assert ckpt["config"]["image_size"] == config.image_size and ckpt["classes"][0] == "akiec"
    assert ckpt["preprocess"]["image_size"] == config.image_size
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 7)
    first = json.loads((tmp_path / "history.json").read_text())

    longer = TrainConfig.load(SMOKE, ["epochs=2"])
    train(longer, {}, tmp_path, resume=True)  # continues at epoch 2 instead of starting over
    history = json.loads((tmp_path / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    assert history[0] == first[0]


def test_config_rejects_unknown_keys():
    try:
        TrainConfig.load(SMOKE, ["learning_rate=1"])
    except ValueError as exc:
        assert "learning_rate" in str(exc)
    else:
        raise AssertionError("an unknown key was accepted")


def test_overrides_are_parsed_by_type():
    config = TrainConfig.load(SMOKE, ["name=tiny", "epochs=3", "lr=0.5", 'source_weight={"pad_ufes20": 2}'])
    assert (config.name, config.epochs, config.lr, config.source_weight) == ("tiny", 3, 0.5, {"pad_ufes20": 2})


def test_the_backbone_runs_in_float32_where_bfloat16_would_be_emulated(monkeypatch):
    # An AVX2-only CPU emulates bfloat16 about ten times slower than float32: the network then runs in float32.
    monkeypatch.setattr(train_module, "CPU_BFLOAT16", False)
    assert not native_bfloat16("cpu") and native_bfloat16("cuda")
    model = pretrained(LiteConfig(variant="lite0", meta_dim=18, aux_heads=True)).eval()
    x, meta = torch.rand(2, 3, 64, 64), torch.zeros(2, 18)
    with torch.no_grad():
        in_float32 = model.heads(model.features(x.contiguous(memory_format=torch.channels_last)).mean(dim=(2, 3)), meta)
        assert torch.equal(head_outputs(model, x, meta)["logits"], in_float32["logits"])
