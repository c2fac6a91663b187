"""End-to-end cost per training image with online projector encoding vs the latent cache, and MFU.

method.md §6 measured that encoding with the frozen projector costs ~4.6x an LMD step at mask 0.75 on an H200, the
reason latents are cached. This measures the same trade on the benchmark's own models and hardware, and
relates the step's arithmetic (counted by ``torch.utils.flop_counter``) to a measured matmul ceiling.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from diffusers_lmd.models import LMDModel
from diffusers_lmd.projector import Projector, encode_images

from .budget import autocast


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def sample_seconds(
    fn: Callable[[], object],
    device: torch.device,
    warmup: int = 2,
    iters: int = 5,
    timer: Callable[[], float] = time.perf_counter,
) -> list[float]:
    """Seconds of each of ``iters`` calls of ``fn`` (by ``timer``: elapsed, or ``time.process_time`` for CPU
    seconds) after ``warmup`` calls, synchronising the device around each call."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        _sync(device)
        start = timer()
        fn()
        _sync(device)
        times.append(timer() - start)
    return times


def matmul_ceiling_tflops(
    device: torch.device, dtype: torch.dtype, n: int, iters: int = 10, timer: Callable[[], float] = time.perf_counter
) -> float:
    """TFLOP/s of the fastest of ``iters`` ``n x n x n`` matmuls: the practical peak MFU is taken against (the
    fastest call, since a ceiling should not move with a noisy neighbour)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    seconds = min(sample_seconds(lambda: a @ b, device, warmup=3, iters=iters, timer=timer))
    return 2 * n**3 / seconds / 1e12


def device_matmul_ceiling(
    device: torch.device, timer: Callable[[], float] = time.perf_counter
) -> tuple[float, torch.dtype]:
    """``(TFLOP/s, dtype)`` of :func:`matmul_ceiling_tflops` in the precision a training step uses on ``device``:
    an 8192³ bf16 product on CUDA, a 2048³ fp32 one elsewhere."""
    dtype, n = (torch.bfloat16, 8192) if device.type == "cuda" else (torch.float32, 2048)
    return matmul_ceiling_tflops(device, dtype, n, timer=timer), dtype


def step_flops(step: Callable[[], object]) -> int:
    """FLOPs of one call of ``step`` (forward and backward), as ``FlopCounterMode`` counts them."""
    counter = FlopCounterMode(display=False)
    with counter:
        step()
    return counter.get_total_flops()


def lmd_cost_per_image(
    model: LMDModel,
    vae: Projector,
    images: torch.Tensor,
    mask_ratios: tuple[float, ...] = (0.15, 0.45, 0.75),
    mixed_precision: str | None = None,
    ceiling_tflops: float | None = None,
    iters: int = 5,
    timer: Callable[[], float] = time.perf_counter,
) -> list[dict]:
    """Milliseconds per image of an LMD training step on cached latents, of encoding, and of both (online).

    ``images`` is one training batch in ``[-1, 1]`` on the model's device. Returns one row per mask ratio with
    ``cached_ms``, ``encode_ms``, ``online_ms`` (per image), ``encode_over_step`` and, given the ceiling, ``mfu``.
    """
    device = images.device
    amp = autocast(device, mixed_precision)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95))
    batch = images.shape[0]

    def encode():
        with amp:
            return encode_images(vae, images)

    latents = encode().float()
    encode_s = statistics.median(sample_seconds(encode, device, iters=iters, timer=timer))  # a typical call
    rows = []
    for ratio in mask_ratios:
        step_s, flops = _train_step_cost(model, optimizer, latents, ratio, amp, iters, timer)
        row = {
            "mask_ratio": ratio,
            "batch": batch,
            "cached_ms": 1e3 * step_s / batch,
            "encode_ms": 1e3 * encode_s / batch,
            "online_ms": 1e3 * (step_s + encode_s) / batch,
            "encode_over_step": encode_s / step_s,
            "step_tflops": flops / step_s / 1e12,
        }
        if ceiling_tflops:
            row["mfu"] = row["step_tflops"] / ceiling_tflops
        rows.append(row)
    return rows


def _train_step_cost(model, optimizer, latents, ratio: float, amp, iters: int, timer) -> tuple[float, int]:
    """Median seconds of one optimiser step at ``ratio``, and the FLOPs of its forward and backward."""

    def loss() -> torch.Tensor:
        with amp:
            return model(latents, mask_ratio=ratio).loss

    def step() -> None:
        loss().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    seconds = statistics.median(sample_seconds(step, latents.device, iters=iters, timer=timer))
    flops = step_flops(lambda: loss().backward())
    optimizer.zero_grad(set_to_none=True)
    return seconds, flops
