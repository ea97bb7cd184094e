"""An LSTM classifier of variable-length sequences ``[N, T, F]`` given their ``lengths``, optionally a small
ensemble of such nets in one module (one ONNX graph, the same inputs and output).

Each member reads the sequence forwards, and when ``bidirectional`` also backwards: the backward direction is a
second LSTM run over each sequence reversed within its own length (a gather, so it exports to ONNX), never over
the padding. A member's summary of the sequence is its output at ``lengths - 1`` (``pooling="last"``) or the mean
of its outputs over the valid frames (``"mean"``); frames after a sequence's end cannot reach either, so a batch
mixing lengths gives each sequence its own answer. The ensemble's output is the mean of its members'
log-probabilities (softmax of it: their normalised geometric mean).
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
    dropout: float = 0.4
    num_classes: int = 9
    bidirectional: bool = True
    pooling: str = "last"  # "last": the output at lengths - 1; "mean": the mean over the valid frames
    members: int = 5  # an ensemble of this many independently initialised nets


def reverse_within_lengths(sequence: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Each sequence's valid frames in reverse order, then (where ``t >= length``) copies of its first frame,
    which the pooling never reads."""
    steps = torch.arange(sequence.size(1), device=sequence.device)
    index = (lengths.view(-1, 1) - 1 - steps.view(1, -1)).clamp(min=0)
    return sequence.gather(1, index.unsqueeze(2).expand(-1, -1, sequence.size(2)))


class SequenceSummary(nn.Module):
    """One direction: an LSTM and its pooling over each sequence's valid frames."""

    def __init__(self, config: LSTMConfig) -> None:
        super().__init__()
        self.lstm = nn.LSTM(
            config.features, config.hidden, num_layers=config.layers, batch_first=True,
            dropout=config.dropout if config.layers > 1 else 0.0,
        )
        self.pooling = config.pooling

    def forward(self, sequence: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(sequence)
        if self.pooling == "mean":
            steps = torch.arange(out.size(1), device=out.device).view(1, -1, 1)
            valid = (steps < lengths.view(-1, 1, 1)).to(out.dtype)
            total: torch.Tensor = (out * valid).sum(1)
            return total / lengths.clamp(min=1).view(-1, 1).to(out.dtype)
        index = (lengths - 1).clamp(min=0).view(-1, 1, 1).expand(-1, 1, out.size(2))
        last: torch.Tensor = out.gather(1, index).squeeze(1)
        return last


class LSTMMember(nn.Module):
    def __init__(self, config: LSTMConfig) -> None:
        super().__init__()
        self.forward_summary = SequenceSummary(config)
        self.backward_summary = SequenceSummary(config) if config.bidirectional else None
        self.dropout = nn.Dropout(config.dropout)
        self.fc = nn.Linear(config.hidden * (2 if config.bidirectional else 1), config.num_classes)

    def forward(self, sequence: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        summary = self.forward_summary(sequence, lengths)
        if self.backward_summary is not None:
            backward = self.backward_summary(reverse_within_lengths(sequence, lengths), lengths)
            summary = torch.cat([summary, backward], dim=1)
        return self.fc(self.dropout(summary))  # type: ignore[no-any-return]


class LSTMClassifier(nn.Module):
    def __init__(self, config: LSTMConfig) -> None:
        super().__init__()
        self.members = nn.ModuleList(LSTMMember(config) for _ in range(config.members))

    def forward(self, sequence: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if len(self.members) == 1:
            return self.members[0](sequence, lengths)  # type: ignore[no-any-return]
        log_probabilities = [torch.log_softmax(member(sequence, lengths), dim=-1) for member in self.members]
        return torch.stack(log_probabilities).mean(0)
