"""Epoch time of LMD training with the latent cache against encoding every batch with the projector.

Both runs are the library's real training loop (``diffusers_lmd.training.train_lmd``) on the built-in
demo data at a constant mask ratio of 0.75, the ratio method.md §6 measures encoding against. The online run loads,
flips and encodes every batch; the cached run reads stored latents (both flips cached). The one-off cache build
is reported separately, with the epochs after which it has paid for itself.

    python benchmarks/bench_latent_cache.py --preset cpu --output benchmarks/results/bench_latent_cache_cpu.json
    python benchmarks/bench_latent_cache.py --preset gpu --output benchmarks/results/bench_latent_cache_gpu.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import tempfile
from pathlib import Path

import torch
from diffusers import VQModel

from diffusers_lmd.training import parse_lmd_args, train_lmd

PRESETS: dict[str, dict] = {
    # The demo's shapes: a 64 px VQ projector with f = 4 (16x16x4 latents, 64 tokens) and the "small" LMD.
    "cpu": dict(resolution=64, projector=dict(block_out_channels=(64, 128, 128), layers_per_block=1,
                norm_num_groups=32, num_vq_embeddings=1024), lmd_preset="small", batch_size=32,
                crops_per_photo=48, epochs=3, mixed_precision="no"),
    # method.md §6: an SD-size f = 8 projector at 224 px (4x28x28 latents, 196 tokens), ViT-B (12 + 8), batch 256, bf16.
    "gpu": dict(resolution=224, projector=dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2,
                norm_num_groups=32, num_vq_embeddings=16384), lmd_preset="base", batch_size=256,
                crops_per_photo=1024, epochs=3, mixed_precision="bf16"),
}  # fmt: skip


def save_projector(cfg: dict, path: Path) -> str:
    """A randomly initialised VQModel of the preset's architecture: encoding cost does not depend on the weights."""
    blocks = len(cfg["projector"]["block_out_channels"])
    torch.manual_seed(0)
    VQModel(
        down_block_types=("DownEncoderBlock2D",) * blocks,
        up_block_types=("UpDecoderBlock2D",) * blocks,
        latent_channels=4,
        sample_size=cfg["resolution"],
        **cfg["projector"],
    ).save_pretrained(path)
    return str(path)


def _steady(seconds: list[float]) -> float:
    """Median over epochs after the first (which includes warm-up)."""
    return statistics.median(seconds[1:] or seconds)


def run(cfg: dict, projector: str, workdir: Path, cached: bool) -> dict:
    """One training run of ``cfg["epochs"]`` epochs; returns its per-epoch times and the cache build time."""
    name = "cached" if cached else "online"
    argv = [
        "--projector_path", projector, "--output_dir", str(workdir / name), "--latent_cache_dir",
        str(workdir / "cache"), "--resolution", str(cfg["resolution"]), "--preset", cfg["lmd_preset"],
        "--train_batch_size", str(cfg["batch_size"]), "--num_train_epochs", str(cfg["epochs"]),
        "--demo_crops_per_photo", str(cfg["crops_per_photo"]), "--demo_eval_crops", "4", "--max_eval_samples", "4",
        "--mask_schedule", "constant", "--random_flip", "--report_to", "none", "--mixed_precision",
        cfg["mixed_precision"], "--checkpointing_steps", "1000000", "--validation_steps", "1000000",
        "--cache_latents" if cached else "--no-cache_latents",
    ]  # fmt: skip
    result = train_lmd(parse_lmd_args(argv))
    return {
        "epoch_seconds": result.epoch_seconds,
        "epoch_cpu_seconds": result.epoch_cpu_seconds,
        "epoch_s": _steady(result.epoch_seconds),
        "epoch_cpu_s": _steady(result.epoch_cpu_seconds),
        "cache_build_s": result.cache_seconds if cached else None,
        "steps": result.global_step,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument("--output", type=str, default=None, help="Write the results as JSON here.")
    args = parser.parse_args()
    cfg = PRESETS[args.preset]
    if args.preset == "gpu" and not torch.cuda.is_available():
        raise SystemExit("--preset gpu needs a CUDA device; use --preset cpu here.")
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        projector = save_projector(cfg, workdir / "projector")
        online = run(cfg, projector, workdir, cached=False)
        cached = run(cfg, projector, workdir, cached=True)
    num_images = 4 * cfg["crops_per_photo"]
    speedup = online["epoch_s"] / cached["epoch_s"]
    cpu_speedup = online["epoch_cpu_s"] / cached["epoch_cpu_s"]
    saved_per_epoch = online["epoch_s"] - cached["epoch_s"]
    report = {
        "preset": args.preset,
        "config": cfg,
        "hardware": {
            "device": torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu",
            "cpu_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            # Other work on the machine slows both runs; the 1-minute load average says how busy it was.
            "load_average_before_after": [load_before, os.getloadavg()[0]],
        },
        "num_train_images": num_images,
        "mask_ratio": 0.75,
        "online": online,
        "cached": cached,
        "speedup": speedup,
        "cpu_time_speedup": cpu_speedup,
        "break_even_epochs": math.ceil(cached["cache_build_s"] / saved_per_epoch) if saved_per_epoch > 0 else None,
    }
    print(f"\nLatent cache, preset {args.preset}: {num_images} images at {cfg['resolution']} px, mask ratio 0.75")
    print(f"{'path':<10}{'epoch (s)':>12}{'epoch CPU (s)':>15}{'img/s':>10}{'build (s)':>12}")
    for name in ("online", "cached"):
        row = report[name]
        build = f"{row['cache_build_s']:.1f}" if row["cache_build_s"] is not None else "-"
        line = f"{row['epoch_s']:>12.2f}{row['epoch_cpu_s']:>15.2f}{num_images / row['epoch_s']:>10.1f}{build:>12}"
        print(f"{name:<10}{line}")
    epochs = report["break_even_epochs"]
    print(f"speed-up of a cached epoch: {speedup:.2f}x wall-clock, {cpu_speedup:.2f}x CPU time; the cache pays for its "
          f"build after {epochs} epoch(s)")  # fmt: skip
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
