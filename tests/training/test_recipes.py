"""The training recipe's options on tiny data, in seconds: the weight average is what is kept and exported,
bfloat16 autocast trains float32 weights, random erasing blanks rectangles, and the LSTM ensemble (bidirectional,
mean-pooled) is one ONNX graph with the serving contract's inputs and output, padding-invariant and at parity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from tests.training.padding import alone_and_padded
from training.ema import WeightEMA
from training.export import check_model_parity, export_onnx
from training.models import build_model
from training.models.lstm import reverse_within_lengths
from training.tasks import Task, image_task, sequence_task
from training.train import fit, random_erase
from training.train_config import TrainConfig


@pytest.fixture(scope="module")
def images(data_dir: Path) -> Task:
    return image_task(data_dir, seed=0, val_fraction=1 / 12, limit=256)


@pytest.fixture(scope="module")
def sequences(data_dir: Path) -> Task:
    return sequence_task(data_dir, seed=0, val_fraction=0.1, limit=64)


def test_the_weight_average_is_what_fit_keeps(images: Task) -> None:
    torch.manual_seed(0)
    model, _ = build_model("cnn")
    config = TrainConfig(epochs=2, batch_size=32, lr=0.05, ema_decay=0.9, keep="last", channels_last=True)
    result = fit(model, images, config, "cnn", quiet=True)
    raw = model.state_dict()
    assert result.best_epoch == 2
    weights = [k for k in raw if k.endswith("weight")]
    assert any(not torch.equal(result.state_dict[k], raw[k]) for k in weights)  # averaged, not the last step's
    assert torch.equal(result.state_dict["features.1.running_mean"], raw["features.1.running_mean"])  # copied


def test_weight_ema_moves_towards_the_model_by_one_minus_decay() -> None:
    model = torch.nn.Linear(2, 1)
    ema = WeightEMA(model, decay=0.5)
    before = ema.model.weight.detach().clone()  # type: ignore[operator]
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)  # step 1: decay min(0.5, 2 / 11)
    expected = before + (1 - 2 / 11) * 1.0
    torch.testing.assert_close(ema.model.weight, expected)


def test_bf16_autocast_trains_float32_weights(images: Task) -> None:
    torch.manual_seed(0)
    model, _ = build_model("resnet")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    config = TrainConfig(epochs=1, batch_size=32, lr=0.05, autocast_bf16=True, channels_last=True)
    result = fit(model, images, config, "resnet", quiet=True)
    assert all(v.dtype in (torch.float32, torch.int64) for v in result.state_dict.values())
    assert not torch.equal(before["stem.0.weight"], result.state_dict["stem.0.weight"])
    assert all(torch.isfinite(v).all() for v in result.state_dict.values())


def test_random_erasing_blanks_one_rectangle_per_chosen_image() -> None:
    images = torch.ones(64, 1, 28, 28)
    erased = random_erase(images, 1.0, torch.Generator().manual_seed(0))
    blank = (erased == 0).sum(dim=(1, 2, 3))
    assert ((blank >= 1) & (blank <= 0.4 * 28 * 28)).all()
    assert torch.equal(random_erase(images, 0.0, torch.Generator().manual_seed(0)), images)


def test_reversal_within_lengths_never_reads_padding() -> None:
    sequence = torch.arange(2 * 4, dtype=torch.float32).view(2, 4, 1)
    reversed_ = reverse_within_lengths(sequence, torch.tensor([2, 4]))
    assert reversed_[0, :2, 0].tolist() == [1.0, 0.0] and reversed_[1, :, 0].tolist() == [7.0, 6.0, 5.0, 4.0]


def test_the_lstm_ensemble_exports_with_the_serving_contract(sequences: Task, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model, _ = build_model("lstm", {"members": 3, "bidirectional": True, "pooling": "mean"})
    model.eval()
    export_onnx(model, sequences, tmp_path / "model.onnx")
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["sequence", "lengths"]
    assert [o.name for o in session.get_outputs()] == ["probabilities"]
    gaps = check_model_parity(model, session, sequences)  # batches 1, 7, 64 and mixed lengths, <= 1e-4
    assert max(gaps.values()) <= 1e-4
    alone, together = alone_and_padded(session)
    assert together.shape == (2, 9) and np.abs(together[0] - alone[0]).max() < 1e-5
    assert np.allclose(together.sum(1), 1.0, atol=1e-5)
