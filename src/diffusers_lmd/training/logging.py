"""What a training run shows and leaves behind: console logging, a progress bar, ``train_log.jsonl``, tracker
images and matplotlib plots (optional: without matplotlib the scripts skip the plots with a warning).

``train_log.jsonl`` holds one JSON object per optimiser step (at least ``step``, ``loss``, ``mask_ratio``,
``lr`` and ``time``, the seconds since the run started); a resumed run drops the lines logged after its
checkpoint, so the file always describes one continuous run.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence

import numpy as np
from tqdm.auto import tqdm

LOG_FORMAT = "%(asctime)s - %(levelname)s - %(name)s - %(message)s"
LOG_DATE_FORMAT = "%m/%d/%Y %H:%M:%S"
PACKAGE_LOGGER = "diffusers_lmd"
PLOT_EXTRA = "pip install matplotlib  (or pip install '.[train]' in a clone of diffusers-lmd)"

logger = logging.getLogger(__name__)


def setup_logging(accelerator) -> None:
    """Make a script's console speak as diffusers' example scripts do, one voice per machine.

    Sends ``logging`` records to stderr (``basicConfig``, a no-op when the application configured logging itself),
    logs this package at INFO on the local main process and ERROR elsewhere, and sets the verbosity of diffusers
    (INFO / ERROR), transformers and datasets (WARNING / ERROR) the same way; then logs the Accelerate state.
    Call once, right after building the ``Accelerator``.
    """
    import datasets
    import diffusers
    import transformers

    logging.basicConfig(format=LOG_FORMAT, datefmt=LOG_DATE_FORMAT, level=logging.INFO)
    main = accelerator.is_local_main_process
    logging.getLogger(PACKAGE_LOGGER).setLevel(logging.INFO if main else logging.ERROR)
    if main:
        datasets.utils.logging.set_verbosity_warning()
        transformers.utils.logging.set_verbosity_warning()
        diffusers.utils.logging.set_verbosity_info()
    else:
        datasets.utils.logging.set_verbosity_error()
        transformers.utils.logging.set_verbosity_error()
        diffusers.utils.logging.set_verbosity_error()
    if main:
        logging.getLogger(PACKAGE_LOGGER).info("%s", accelerator.state)


class JsonlLogger:
    """Append one JSON line per optimiser step to ``path`` (only where ``enabled``, i.e. the main process).

    Args:
        path: the log file.
        resume_step: when resuming, keep only the lines with ``step <= resume_step`` and continue after them.
        enabled: write nothing when ``False`` (the other ranks of a data-parallel run).
    """

    def __init__(self, path: str, resume_step: int | None = None, enabled: bool = True):
        self.path = path
        self.enabled = enabled
        self.time_offset = 0.0
        if not enabled:
            return
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        kept = []
        if resume_step is not None and os.path.exists(path):
            kept = [r for r in read_jsonl(path) if r.get("step", 0) <= resume_step]
            self.time_offset = kept[-1].get("time", 0.0) if kept else 0.0
        with open(path, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in kept)

    def log(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record, allow_nan=True) + "\n")


def read_jsonl(path: str) -> list[dict]:
    """All records of a JSON-lines file, skipping a truncated last line."""
    records = []
    with open(path) as f:
        for line in f:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


class ProgressBar:
    """A tqdm bar over optimiser steps showing loss, mask ratio, learning rate and images per second."""

    def __init__(self, total: int, initial: int = 0, disable: bool = False, desc: str = "Steps"):
        self.bar = tqdm(total=total, initial=initial, disable=disable, desc=desc, dynamic_ncols=True)
        self._last = time.perf_counter()

    def update(self, loss: float, mask_ratio: float, lr: float, images: int) -> float:
        """Advance one step; return the images per second of this step."""
        now = time.perf_counter()
        img_s = images / max(now - self._last, 1e-9)
        self._last = now
        self.bar.set_postfix(loss=f"{loss:.4f}", mask=f"{mask_ratio:.3f}", lr=f"{lr:.2e}", img_s=f"{img_s:.1f}")
        self.bar.update(1)
        return img_s

    def close(self) -> None:
        self.bar.close()


def _figure():
    try:
        import matplotlib
    except ImportError as err:
        raise ImportError(f"Plotting training curves needs matplotlib, which is not installed: {PLOT_EXTRA}.") from err

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _smooth(values: Sequence[float], beta: float = 0.9) -> list[float]:
    """Bias-corrected exponential moving average, as TensorBoard smooths curves."""
    out, avg = [], 0.0
    for i, v in enumerate(values, start=1):
        avg = beta * avg + (1 - beta) * v
        out.append(avg / (1 - beta**i))
    return out


def plot_loss_curve(records: Sequence[dict], path: str, title: str = "Training loss (masked-patch MSE)") -> str:
    """Plot ``loss`` (raw and smoothed) and, where logged, held-out PSNR against step; save a PNG."""
    plt = _figure()
    rows = [r for r in records if "loss" in r and math.isfinite(r["loss"])]
    if not rows:
        raise ValueError("No finite losses to plot: the log is empty.")
    steps = [r["step"] for r in rows]
    losses = [r["loss"] for r in rows]
    evals = [r for r in records if "eval_psnr" in r]
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
    ax.plot(steps, losses, color="tab:blue", alpha=0.3, linewidth=0.8, label="loss")
    ax.plot(steps, _smooth(losses), color="tab:blue", linewidth=1.6, label="loss (EMA 0.9)")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    handles = ax.get_legend_handles_labels()[0]
    if evals:
        ax2 = ax.twinx()
        steps_eval, psnrs = [r["step"] for r in evals], [r["eval_psnr"] for r in evals]
        handles += ax2.plot(steps_eval, psnrs, "o-", color="tab:red", label="held-out PSNR")
        ax2.set_ylabel("held-out PSNR (dB)", color="tab:red")
    ax.legend(handles=handles, loc="center right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_or_warn(plot: Callable[..., str], *args, **kwargs) -> str | None:
    """``plot(*args, **kwargs)``, or ``None`` with a warning when matplotlib is missing: a finished run's model is
    already saved, and a missing optional plot must not fail it."""
    try:
        return plot(*args, **kwargs)
    except ImportError as err:
        logger.warning("Skipped %s: %s", getattr(plot, "__name__", "a plot"), err)
        return None


def plot_mask_schedule(records: Sequence[dict], path: str, title: str = "Mask ratio per step") -> str:
    """Plot the logged ``mask_ratio`` against step; save a PNG."""
    plt = _figure()
    rows = [r for r in records if "mask_ratio" in r]
    if not rows:
        raise ValueError("No mask ratios to plot: the log is empty.")
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
    ax.plot([r["step"] for r in rows], [r["mask_ratio"] for r in rows], color="tab:green")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("mask ratio")
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def log_images(accelerator, tag: str, grid: np.ndarray, step: int) -> None:
    """Send an ``H x W x 3`` uint8 image to every tracker of ``accelerator`` that logs images.

    Goes through each tracker's own Accelerate ``log_images``; only the value's shape differs between trackers
    (TensorBoard takes a batch, Aim and ClearML one image, Weights & Biases, SwanLab and others a list).
    Trackers without ``log_images`` (MLflow, Comet, DVCLive, ...) are skipped.
    """
    if grid.ndim != 3 or grid.shape[-1] != 3 or grid.dtype != np.uint8:
        raise ValueError(f"log_images takes an H x W x 3 uint8 image, got {grid.dtype} of shape {grid.shape}.")
    for tracker in accelerator.trackers:
        log = getattr(tracker, "log_images", None)
        if log is None:
            continue
        if tracker.name == "tensorboard":
            log({tag: grid[None]}, step=step, dataformats="NHWC")
        elif tracker.name in ("aim", "clearml"):
            log({tag: grid}, step=step)
        else:
            log({tag: [grid]}, step=step)
