"""Train one class-conditional generator for a wall-clock budget and score its samples like every other method.

Training is :class:`~lmd_bench.budget.BudgetLoop`'s (the clock, data order, flips, optimiser and weight EMA every
method shares); sampling and scoring pause the clock and are timed on their own, on the EMA weights. Every method
gets the same label dropout and guidance.
Quality is :data:`~diffusers_lmd.metrics.FID_NAME` (not comparable to Inception FID), conditional accuracy and
precision / recall against the Fashion-MNIST test split, on class-balanced samples from a fixed seed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from diffusers_lmd.data import DataConfig, LabelledTensors, build_labelled_datasets
from diffusers_lmd.metrics import GenerationScorer

from .budget import CLOCKS, DEFAULT_RUN, BudgetLoop, RunSettings
from .data import BenchmarkData, build_benchmark_data
from .generation_methods import GenerationMethod, balanced_labels
from .generation_presets import GenerationPreset

SAMPLE_SEED = 1234  # every evaluation of every method samples from the same seed (the same U-Net start noise)


@dataclass
class GenerationData:
    """The benchmark's images (pixels and cached latents, :class:`BenchmarkData`), the training labels, the
    test split the samples are scored against, and the class names."""

    data: BenchmarkData
    train_labels: torch.Tensor
    test: LabelledTensors
    label_names: list[str]

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    def balanced_train_subset(self, count: int) -> LabelledTensors:
        """``count`` training images, class-balanced and ordered like :func:`balanced_labels` (for the floor)."""
        return balanced_subset(LabelledTensors(self.data.train_images, self.train_labels), count, self.num_classes)


def balanced_subset(tensors: LabelledTensors, count: int, num_classes: int) -> LabelledTensors:
    """The first ``count // num_classes`` images of every class, ordered like :func:`balanced_labels`: what a
    perfect generator asked for those labels could return (the metric's floor)."""
    labels = balanced_labels(count, num_classes)
    per_class = [torch.nonzero(tensors.labels == c).flatten() for c in range(num_classes)]
    smallest = min(len(p) for p in per_class)
    if count > smallest * num_classes:
        raise ValueError(f"A balanced set of {count} needs {count // num_classes} images per class; the "
                         f"set has {smallest} of its rarest class: score fewer samples.")  # fmt: skip
    taken = [0] * num_classes
    indices = []
    for label in labels.tolist():
        indices.append(int(per_class[label][taken[label]]))
        taken[label] += 1
    index = torch.tensor(indices)
    return LabelledTensors(tensors.images[index], tensors.labels[index])


def build_generation_data(
    data_options: DataConfig, vae, cache_dir: str, accelerator, encode_batch_size: int = 250
) -> tuple[GenerationData, dict]:
    """Labelled Fashion-MNIST through the library's data path, training latents encoded once (both flips)."""
    train, test, names = build_labelled_datasets(data_options)
    data, cost = build_benchmark_data(data_options, train, test, vae, cache_dir, accelerator, encode_batch_size)
    test_tensors = LabelledTensors(data.eval_images, test.labels.clone())  # stacked in dataset order
    return GenerationData(data, train.labels.clone(), test_tensors, names), cost


@torch.no_grad()
def sample_classes(
    method: GenerationMethod,
    num_samples: int,
    guidance_scale: float,
    batch_size: int,
    device: torch.device,
    clock: str = "wall",
    seed: int = SAMPLE_SEED,
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """``(images, labels, seconds)``: ``num_samples`` class-balanced samples on the CPU and the time they took."""
    now = CLOCKS[clock]
    labels = balanced_labels(num_samples, method.num_classes)
    generator = torch.Generator(device).manual_seed(seed)
    was_training = method.model.training
    method.model.eval()
    images = []
    start = now()
    try:
        for first in range(0, num_samples, batch_size):
            images.append(method.sample(labels[first : first + batch_size], guidance_scale, generator).cpu())
    finally:
        method.model.train(was_training)
    seconds = now() - start
    images = torch.cat(images)
    if images.shape[0] != num_samples or images.ndim != 4:
        raise ValueError(f"{method.name}.sample returned {tuple(images.shape)} for {num_samples} labels.")
    return images, labels, seconds


def score_method(
    method: GenerationMethod,
    scorer: GenerationScorer,
    preset: GenerationPreset,
    num_samples: int,
    device: torch.device,
    clock: str = "wall",
) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """Sample ``num_samples`` images and score them; returns ``(scores, images, labels)``."""
    images, labels, seconds = sample_classes(
        method, num_samples, preset.guidance_scale, preset.sample_batch_size, device, clock
    )
    scores = scorer.score(images, labels)
    scores.update(sample_s=round(seconds, 3), samples_per_s=num_samples / seconds if seconds > 0 else None)
    return scores, images, labels


def _curve_point(seconds: float, step: int, scores: dict, samples_per_s: float | None) -> list:
    keys = ("fid", "conditional_accuracy", "precision", "recall")
    return [round(seconds, 3), step, *(scores[k] for k in keys), samples_per_s]


CLASS_SCORES = ("class_precision", "class_recall", "class_coverage")
CURVE_COLUMNS = ("train_s", "step", "fid", "conditional_accuracy", "precision", "recall", "samples_per_s")


def train_generator_for_budget(
    method: GenerationMethod,
    data: GenerationData,
    preset: GenerationPreset,
    scorer: GenerationScorer,
    run: RunSettings = DEFAULT_RUN,
    save_dir: str | None = None,
) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """Train ``method`` for ``preset.budget_s`` seconds of training; return its row and its final samples.

    With ``save_dir``, the final model (the EMA weights it was scored with) is saved there by
    ``method.save_pretrained`` after the final score.

    The row holds ``fid``, ``conditional_accuracy``, ``precision``, ``recall``, ``density`` / ``coverage`` (and
    :data:`CLASS_SCORES` with the scorer's reference labels), ``samples_per_s`` (of the final
    ``final_samples``), ``train_s``, ``steps``, ``mit_s`` / ``mli`` / ``mlt_s`` (method.md §5), ``curve`` (rows of
    :data:`CURVE_COLUMNS` at ``eval_samples`` each, the last from the first ``eval_samples`` final samples) and
    ``losses`` (``[step, train_seconds, loss]``).
    """
    loop = BudgetLoop(method, data.data, preset, run, ema_decay=preset.ema_decay)
    device, train_labels = loop.device, data.train_labels.to(loop.device)
    eval_times = [preset.budget_s * k / preset.num_evals for k in range(1, preset.num_evals)]
    curve = []

    def evaluate(train_seconds: float, step: int) -> None:
        with loop.ema_weights():
            scores, _, _ = score_method(method, scorer, preset, preset.eval_samples, device, run.clock)
        curve.append(_curve_point(train_seconds, step, scores, scores["samples_per_s"]))

    def step_loss(batch: torch.Tensor, indices: torch.Tensor, progress: float) -> torch.Tensor:
        return method.conditional_loss(batch, train_labels[indices], progress, loop.generator)

    loop.run(step_loss, eval_times, evaluate)
    with loop.ema_weights():
        final, samples, labels = score_method(method, scorer, preset, preset.final_samples, device, run.clock)
        if save_dir:
            method.save_pretrained(save_dir)
    prefix = scorer.score(samples[: preset.eval_samples], labels[: preset.eval_samples])
    curve.append(_curve_point(loop.elapsed, loop.tracker.steps, prefix, final["samples_per_s"]))
    row = {
        "method": method.name,
        **{k: final[k] for k in ("fid", "conditional_accuracy", "precision", "recall", "num_samples")},
        **{k: final[k] for k in ("density", "coverage", *CLASS_SCORES) if k in final},
        "samples_per_s": final["samples_per_s"],
        "sample_s": final["sample_s"],
        "train_s": round(loop.elapsed, 3),
        **loop.efficiency(),
        "loss_events": loop.tracker.num_events,
        "final_loss": loop.losses[-1][2] if loop.losses else None,
        "params_m": loop.params_m(),
        "space": method.space,
        "sampler": {**method.sampler_setting(), "guidance_scale": preset.guidance_scale},
        "clock": run.clock,
        "load_avg": loop.load_avg(),
        "curve_columns": list(CURVE_COLUMNS),
        "curve": curve,
        "losses": loop.logged_losses(),
    }
    return row, samples, labels


def fid_floor(data: GenerationData, scorer: GenerationScorer, counts: tuple[int, ...]) -> dict:
    """The metric's own floor: class-balanced training images scored against the test split at each count, and
    all training images (FID only). What a perfect generator of the training distribution would get."""
    floor = {}
    for count in counts:
        subset = data.balanced_train_subset(count)
        floor[str(count)] = scorer.score(subset.images, subset.labels)
    start = time.perf_counter()
    floor["all_train"] = {"fid": scorer.fid(data.data.train_images), "num_samples": len(data.data)}
    floor["all_train"]["score_s"] = round(time.perf_counter() - start, 1)
    return floor
