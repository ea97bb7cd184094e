"""Forward shapes of the four families, the ResNet's shortcuts, and the LSTM's padding invariance."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from training.models import build_model, count_parameters
from training.models.resnet import BasicBlock


@pytest.mark.parametrize("family", ["mlp", "cnn", "resnet"])
@pytest.mark.parametrize("batch", [1, 5])
def test_image_models_map_images_to_class_logits(family: str, batch: int) -> None:
    model, config = build_model(family)
    out = model.eval()(torch.randn(batch, 1, 28, 28))
    assert out.shape == (batch, 10) and count_parameters(model) > 10_000
    assert config["num_classes"] == 10


def test_resnet_has_identity_and_projection_shortcuts() -> None:
    model, _ = build_model("resnet")
    blocks = [m for m in model.modules() if isinstance(m, BasicBlock)]
    assert len(blocks) == 9  # ResNet-20: 3 stages x 3 blocks x 2 convs + stem + fc
    projections = [b for b in blocks if not isinstance(b.shortcut, nn.Identity)]
    assert len(projections) == 2 and all(isinstance(b.shortcut[0], nn.Conv2d) for b in projections)  # type: ignore[index]


def test_lstm_reads_each_sequence_at_its_own_length() -> None:
    model, _ = build_model("lstm")
    model.eval()
    torch.manual_seed(0)
    short, long = torch.randn(1, 7, 12), torch.randn(1, 29, 12)
    alone = model(short, torch.tensor([7]))
    padded = torch.cat([torch.cat([short, torch.full((1, 22, 12), 5.0)], 1), long])
    together = model(padded, torch.tensor([7, 29]))
    assert together.shape == (2, 9)
    torch.testing.assert_close(together[0:1], alone, atol=1e-6, rtol=0)
