"""The fine-tuning loop shared by ``training/finetune_classifier.py``, ``benchmarks/bench_finetune.py`` and the tests.

It trains any classifier called as ``model(**batch)`` that returns ``.loss`` and ``.logits`` (an
:class:`~diffusers_lmd.LMDForImageClassification` on latents, a transformers ``ViTForImageClassification`` on
pixels), evaluates top-1/top-5 accuracy every ``eval_steps`` optimiser steps and logs each evaluation with the
*training* wall-clock time (evaluation and checkpointing pause the clock), the axis MAT@k is measured on. With an
``EMAModel`` the weights' moving average is updated after every optimiser step and evaluated instead of the raw
weights, as diffusers' example scripts validate.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable

import torch
from accelerate import Accelerator
from diffusers.training_utils import EMAModel
from tqdm.auto import tqdm

from ..training.ema import ema_weights

TOP_K = (1, 5)


class TrainingClock:
    """Wall-clock seconds spent training: runs from :meth:`start`, stops while paused (evaluation, checkpoints)."""

    def __init__(self, elapsed: float = 0.0):
        self._elapsed = float(elapsed)
        self._started: float | None = None

    def start(self) -> None:
        if self._started is None:
            self._started = time.perf_counter()

    def pause(self) -> None:
        if self._started is not None:
            self._elapsed += time.perf_counter() - self._started
            self._started = None

    @property
    def elapsed(self) -> float:
        running = time.perf_counter() - self._started if self._started is not None else 0.0
        return self._elapsed + running


@torch.no_grad()
def evaluate_accuracy(
    model: torch.nn.Module, dataloader: Iterable[dict], accelerator: Accelerator, top_k: tuple[int, ...] = TOP_K
) -> dict[str, float]:
    """Top-k accuracy (``top1``, ``top5``...) and mean ``eval_loss`` over a labelled dataloader, all processes.

    A ``k`` at or above the number of classes counts every sample as correct.
    """
    was_training = model.training
    model.eval()
    correct = {k: 0 for k in top_k}
    total, loss_sum = 0, 0.0
    for batch in dataloader:
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
        logits, labels = accelerator.gather_for_metrics((logits, batch["labels"]))
        ranked = logits.topk(min(max(top_k), logits.shape[1]), dim=1).indices
        hits = ranked == labels[:, None]
        for k in top_k:
            correct[k] += int(hits[:, :k].any(dim=1).sum())
        loss_sum += float(torch.nn.functional.cross_entropy(logits.float(), labels, reduction="sum"))
        total += labels.shape[0]
    model.train(was_training)
    if total == 0:
        raise ValueError("The evaluation dataloader is empty: keep at least one held-out image.")
    return {**{f"top{k}": correct[k] / total for k in top_k}, "eval_loss": loss_sum / total}


def apply_layer_decay(
    optimizer: torch.optim.Optimizer,
    model: torch.nn.Module,
    layer_decay: float,
    layer_id: Callable[[str], int],
    num_layers: int,
) -> None:
    """Layer-wise LR decay (MAE fine-tuning): split each parameter group by depth, ``lr x decay^(top - depth)``.

    ``layer_id(name)`` gives 0 for the embeddings, ``i + 1`` for block ``i`` and ``num_layers + 1`` for the head,
    so the head keeps the full rate and the patch embedding gets ``layer_decay ** (num_layers + 1)`` of it. Call
    before the first step and before building the LR scheduler (it records each group's initial rate).
    """
    if not 0.0 < layer_decay <= 1.0:
        raise ValueError(f"layer_decay must lie in (0, 1], got {layer_decay}.")
    if any(optimizer.state.values()):
        raise ValueError("apply_layer_decay must be called before the optimiser's first step.")
    names = {param: name for name, param in model.named_parameters()}
    groups = []
    for group in optimizer.param_groups:
        by_depth: dict[int, list[torch.nn.Parameter]] = {}
        for param in group["params"]:
            by_depth.setdefault(layer_id(names[param]), []).append(param)
        for depth, params in sorted(by_depth.items()):
            scale = layer_decay ** (num_layers + 1 - depth)
            groups.append({**group, "params": params, "lr": group["lr"] * scale, "lr_scale": scale})
    optimizer.param_groups.clear()
    for group in groups:
        optimizer.add_param_group(group)


def finetune(
    accelerator: Accelerator,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    lr_scheduler: torch.optim.lr_scheduler.LRScheduler,
    train_dataloader: Iterable[dict],
    eval_dataloader: Iterable[dict],
    *,
    max_train_steps: int,
    eval_steps: int,
    max_train_seconds: float | None = None,
    max_grad_norm: float = 1.0,
    records: list[dict] | None = None,
    start_step: int = 0,
    start_seconds: float = 0.0,
    log: Callable[[dict], None] | None = None,
    checkpointing_steps: int | None = None,
    save_checkpoint: Callable[[int, float], None] | None = None,
    show_progress: bool = True,
    ema: EMAModel | None = None,
) -> list[dict]:
    """Train until ``max_train_steps`` optimiser steps or ``max_train_seconds`` of training; return the evaluations.

    Every evaluation (at the start, every ``eval_steps`` steps and at the end) is a record ``{"step", "time",
    "top1", "top5", "eval_loss", "train_loss", "lr"}`` appended to ``records`` and passed to ``log``. A resumed
    run passes the ``records`` so far, its ``start_step`` and ``start_seconds`` (from the checkpoint) so the
    curve continues; ``save_checkpoint(step, train_seconds)`` is called every ``checkpointing_steps``.
    A non-finite loss stops training with a ``FloatingPointError`` naming the step, before the weights change.
    ``ema`` (diffusers' ``EMAModel`` over ``model``'s parameters) steps after every optimiser step, and every
    evaluation runs on its weights (store, copy in, restore).
    """
    if eval_steps < 1:
        raise ValueError(f"eval_steps must be at least 1, got {eval_steps}.")
    records = [] if records is None else records
    clock = TrainingClock(start_seconds)
    step, losses = start_step, []

    def evaluate() -> None:
        clock.pause()
        with ema_weights(ema, model):
            scores = evaluate_accuracy(model, eval_dataloader, accelerator)
        record = {"step": step, "time": clock.elapsed, **scores}
        record["train_loss"] = sum(losses) / len(losses) if losses else None
        record["lr"] = max(lr_scheduler.get_last_lr())  # the head's rate under layer decay
        losses.clear()
        records.append(record)
        if log is not None:
            log(record)
        clock.start()

    if not records:
        evaluate()
    shown = show_progress and accelerator.is_local_main_process
    progress = tqdm(total=max_train_steps, initial=step, disable=None if shown else True)  # None: hidden off a TTY
    model.train()
    clock.start()
    batches = _batches(accelerator, train_dataloader, start_step)
    while step < max_train_steps:
        mean_loss = _optimizer_step(accelerator, model, optimizer, lr_scheduler, batches, max_grad_norm, step)
        if ema is not None:
            ema.step(model.parameters())
        step += 1
        over_time = max_train_seconds is not None and _all_over_time(accelerator, clock, max_train_seconds)
        losses.append(mean_loss)
        progress.update(1)
        progress.set_postfix(loss=f"{mean_loss:.4f}", top1=f"{records[-1]['top1']:.3f}")
        if step % eval_steps == 0 or step == max_train_steps or over_time:
            evaluate()
        if save_checkpoint is not None and checkpointing_steps and step % checkpointing_steps == 0:
            clock.pause()
            save_checkpoint(step, clock.elapsed)
            clock.start()
        if over_time:
            break
    clock.pause()
    progress.close()
    return records


def _batches(accelerator: Accelerator, dataloader, start_step: int):
    """Endless batches across epochs, skipping the micro-batches a resumed run has already trained on."""
    per_epoch = len(dataloader)
    if per_epoch == 0:
        raise ValueError("The training dataloader is empty: the dataset is smaller than one batch.")
    skip = (start_step * accelerator.gradient_accumulation_steps) % per_epoch
    while True:
        yield from accelerator.skip_first_batches(dataloader, skip) if skip else dataloader
        skip = 0


def _all_over_time(accelerator: Accelerator, clock: TrainingClock, max_train_seconds: float) -> bool:
    """Whether any process has used up the time budget, so that every process stops at the same step."""
    over = torch.tensor(float(clock.elapsed >= max_train_seconds), device=accelerator.device)
    return bool(accelerator.reduce(over, "sum").item())


def _optimizer_step(accelerator, model, optimizer, lr_scheduler, batches, max_grad_norm: float, step: int) -> float:
    """One optimiser step: micro-batches until Accelerate syncs the gradients; returns their mean loss over ranks.

    A non-finite loss raises ``FloatingPointError`` on every rank before it reaches the weights.
    """
    total, count = 0.0, 0
    while True:
        with accelerator.accumulate(model):
            loss = model(**next(batches)).loss
            value = accelerator.reduce(loss.detach().float(), "mean").item()
            if not math.isfinite(value):
                raise FloatingPointError(
                    f"The training loss is {value} at step {step + 1}, before the update: lower --learning_rate or "
                    "check the data, then resume from the last checkpoint with --resume_from_checkpoint latest."
                )
            accelerator.backward(loss)
            if accelerator.sync_gradients and max_grad_norm > 0:
                accelerator.clip_grad_norm_(model.parameters(), max_grad_norm)
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        total, count = total + value, count + 1
        if accelerator.sync_gradients:
            return total / count
