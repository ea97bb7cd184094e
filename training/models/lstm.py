"""An LSTM classifier of variable-length sequences ``[N, T, F]`` given their ``lengths``.

Unidirectional, and the class is read from the output at ``lengths - 1``: frames after a sequence's end
(padding) cannot reach that output, so a batch mixing lengths gives each sequence its own answer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class LSTMConfig:
    features: int = 12
    hidden: int = 64
    layers: int = 1
    dropout: float = 0.2
    num_classes: int = 9


class LSTMClassifier(nn.Module):
    def __init__(self, config: LSTMConfig) -> None:
        super().__init__()
        self.lstm = nn.LSTM(
            config.features, config.hidden, num_layers=config.layers, batch_first=True,
            dropout=config.dropout if config.layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(config.dropout)
        self.fc = nn.Linear(config.hidden, config.num_classes)

    def forward(self, sequence: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(sequence)
        index = (lengths - 1).clamp(min=0).view(-1, 1, 1).expand(-1, 1, out.size(2))
        last = out.gather(1, index).squeeze(1)
        return self.fc(self.dropout(last))  # type: ignore[no-any-return]
