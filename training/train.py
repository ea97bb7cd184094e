"""``fit()`` and ``evaluate()``: mini-batch training with a one-cycle schedule, augmentation for images,
gradient clipping, and the best-on-validation weights kept. No command line in here."""

from __future__ import annotations

import copy
import random
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from training.ema import WeightEMA
from training.tasks import Split, Task
from training.train_config import TrainConfig


@dataclass
class FitResult:
    state_dict: dict[str, Any]
    best_val_accuracy: float
    best_epoch: int
    epochs: int
    wall_time_s: float
    samples_per_s: float
    history: list[dict[str, float]] = field(default_factory=list)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def augment(images: torch.Tensor, shift: int, hflip: bool, generator: torch.Generator) -> torch.Tensor:
    """Random translation by up to ``shift`` pixels (zero padding, crop back) and horizontal flips."""
    n, _, h, w = images.shape
    if shift:
        padded = F.pad(images, (shift, shift, shift, shift), value=float(images.min()))
        dy = torch.randint(0, 2 * shift + 1, (n,), generator=generator)
        dx = torch.randint(0, 2 * shift + 1, (n,), generator=generator)
        rows = (dy[:, None] + torch.arange(h))[:, :, None]
        cols = (dx[:, None] + torch.arange(w))[:, None, :]
        images = padded[torch.arange(n)[:, None, None], 0, rows, cols].unsqueeze(1)
    if hflip:
        flip = torch.rand(n, generator=generator) < 0.5
        images = torch.where(flip[:, None, None, None], images.flip(3), images)
    return images


def random_erase(images: torch.Tensor, probability: float, generator: torch.Generator) -> torch.Tensor:
    """Random erasing: with ``probability``, one rectangle of 2-25% of the image (aspect ratio 1/3..3) is set to 0,
    the mean of the normalised pixels."""
    n, _, h, w = images.shape
    area = torch.empty(n).uniform_(0.02, 0.25, generator=generator) * h * w
    aspect = torch.exp(torch.empty(n).uniform_(-1.1, 1.1, generator=generator))
    eh = (area * aspect).sqrt().round().clamp(1, h).long()
    ew = (area / aspect).sqrt().round().clamp(1, w).long()
    top = (torch.rand(n, generator=generator) * (h - eh + 1)).long()
    left = (torch.rand(n, generator=generator) * (w - ew + 1)).long()
    rows, cols = torch.arange(h)[None, :], torch.arange(w)[None, :]
    inside_rows = (rows >= top[:, None]) & (rows < (top + eh)[:, None])
    inside_cols = (cols >= left[:, None]) & (cols < (left + ew)[:, None])
    erase = inside_rows[:, :, None] & inside_cols[:, None, :]
    erase &= (torch.rand(n, generator=generator) < probability)[:, None, None]
    return images.masked_fill(erase[:, None], 0.0)


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr)
    return torch.optim.SGD(groups, lr=config.lr, momentum=0.9, nesterov=True)


@torch.no_grad()
def predict_proba(model: nn.Module, split: Split, batch_size: int = 512) -> np.ndarray:
    model.eval()
    out = []
    for start in range(0, len(split), batch_size):
        index = torch.arange(start, min(start + batch_size, len(split)))
        inputs, _ = split.take(index)
        out.append(torch.softmax(model(*inputs), dim=-1))
    return torch.cat(out).numpy()


def accuracy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    return float((probabilities.argmax(axis=1) == labels).mean())


def evaluate(model: nn.Module, split: Split) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) on ``split``."""
    probabilities = predict_proba(model, split)
    labels = split.labels.numpy()
    loss = float(-np.log(np.maximum(probabilities[np.arange(len(labels)), labels], 1e-12)).mean())
    return accuracy(probabilities, labels), loss


def fit(model: nn.Module, task: Task, config: TrainConfig, name: str, quiet: bool = False) -> FitResult:
    seed_everything(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    optimizer = make_optimizer(model, config)
    ema = WeightEMA(model, config.ema_decay) if config.ema_decay else None
    kept = ema.model if ema else model  # the weights validated, and kept when best
    steps_per_epoch = max(1, len(task.train) // config.batch_size)
    scheduler: torch.optim.lr_scheduler.LRScheduler
    if config.epochs * steps_per_epoch >= 20:
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=config.lr, epochs=config.epochs, steps_per_epoch=steps_per_epoch, pct_start=0.25
        )
    else:  # a smoke run too short for a schedule: a constant, gentler rate
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 0.1)
    best: dict[str, Any] = {"acc": -1.0, "loss": float("inf"), "epoch": 0, "state": None}
    history: list[dict[str, float]] = []
    start, seen = time.perf_counter(), 0
    for epoch in range(1, config.epochs + 1):
        model.train()
        order = torch.randperm(len(task.train), generator=generator)
        bar = tqdm(range(steps_per_epoch), desc=f"{name} epoch {epoch}/{config.epochs}", leave=False,
                   disable=quiet, mininterval=1.0, unit="batch")
        epoch_start, loss_sum, correct, count = time.perf_counter(), 0.0, 0, 0
        for step in bar:
            inputs, labels = task.train.take(order[step * config.batch_size:(step + 1) * config.batch_size])
            if task.is_image and (config.shift or config.hflip):
                inputs = (augment(inputs[0], config.shift, config.hflip, generator),)
            if task.is_image and config.random_erasing:
                inputs = (random_erase(inputs[0], config.random_erasing, generator),)
            if config.channels_last:
                inputs = (inputs[0].contiguous(memory_format=torch.channels_last),)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.autocast_bf16):
                logits = model(*inputs).float()
            loss = F.cross_entropy(logits, labels, label_smoothing=config.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            if config.grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            scheduler.step()
            if ema:
                ema.update(model)
            loss_sum += loss.item() * len(labels)
            correct += int((logits.argmax(1) == labels).sum())
            count += len(labels)
            bar.set_postfix(loss=f"{loss_sum / count:.4f}", acc=f"{correct / count:.4f}",
                            samples_s=f"{count / (time.perf_counter() - epoch_start):.0f}", refresh=False)
        seen += count
        val_acc, val_loss = evaluate(kept, task.val)
        history.append({"epoch": epoch, "loss": loss_sum / count, "train_accuracy": correct / count,
                        "val_accuracy": val_acc, "val_loss": val_loss, "lr": float(scheduler.get_last_lr()[0])})
        # Best on validation accuracy; ties (common on a small validation set) go to the lower loss.
        improved = val_acc > best["acc"] or (val_acc == best["acc"] and val_loss < best["loss"])
        if improved or (config.keep == "last" and epoch == config.epochs):
            best = {"acc": val_acc, "loss": val_loss, "epoch": epoch, "state": copy.deepcopy(kept.state_dict())}
        if not quiet:
            print(f"{name} epoch {epoch}/{config.epochs}: loss {loss_sum / count:.4f} "
                  f"train acc {correct / count:.4f} val acc {val_acc:.4f} "
                  f"({count / (time.perf_counter() - epoch_start):.0f} samples/s)", flush=True)
    wall = time.perf_counter() - start
    return FitResult(
        state_dict=best["state"], best_val_accuracy=best["acc"], best_epoch=best["epoch"],
        epochs=config.epochs, wall_time_s=wall, samples_per_s=seen / wall, history=history,
    )
