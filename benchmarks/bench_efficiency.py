#!/usr/bin/env python
"""Training efficiency: every method for the same wall-clock budget on the same images, scored the same way.

Trains a projector once with ``training/train_projector.py`` (its cost is reported on its own line), caches
the training latents once, then trains each method in a fresh process (so its peak memory is its own) and
measures MIT / MLI / MLT (method.md §5) and held-out PSNR against training time; the headline is the time each
method needs to reach a target PSNR (see ``lmd_bench.efficiency_results.target_psnr``), LMD-CS against
MAE over several seeds.

    python benchmarks/bench_efficiency.py --preset fmnist-cpu --output benchmarks/results/efficiency_fmnist_cpu.json \\
        --plots_dir docs/images
    python benchmarks/bench_efficiency.py --preset fmnist-cpu --sweep_learning_rates 3e-4 1e-3 2e-3 \\
        --output benchmarks/results/efficiency_fmnist_cpu_lr_sweep.json        # how the preset's rates were chosen
    python benchmarks/bench_efficiency.py --preset gpu --output benchmarks/results/efficiency_gpu.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import torch

from diffusers_lmd.data import DataConfig, build_datasets
from diffusers_lmd.environment import describe_hardware, git_commit
from diffusers_lmd.evaluation import latent_reference_psnr, pixel_reference_psnr
from diffusers_lmd.projector import downsample_factor
from diffusers_lmd.training import load_projector
from diffusers_lmd.training.args import add_data_args, data_config
from lmd_bench.budget import CLOCKS, RunSettings
from lmd_bench.cli import REPO, bench_parser, default_device, write_json, write_markdown
from lmd_bench.data import BenchmarkData, build_benchmark_data
from lmd_bench.efficiency_loop import train_for_budget
from lmd_bench.efficiency_presets import PRESETS, EfficiencyPreset, get_preset
from lmd_bench.efficiency_registry import MAE_FAMILY, METHODS, build_method, check_methods
from lmd_bench.efficiency_report import (
    plot_loss_curves,
    plot_mask_schedules,
    plot_psnr_vs_time,
    results_table,
    setting_lines,
    table_1,
    table_3,
    table_5,
    throughput_table,
)
from lmd_bench.efficiency_results import (
    HEADLINE_METHODS,
    add_time_to_target,
    best_psnr,
    seeded_speedup,
    speedup,
    target_psnr,
)
from lmd_bench.throughput import device_matmul_ceiling, lmd_cost_per_image


def parse_args(argv=None) -> argparse.Namespace:
    parser = bench_parser(__doc__, PRESETS, "cpu", "Benchmark size and data.")
    parser.add_argument("--methods", nargs="+", default=None, help="Methods to run (default: the preset's, or all).")
    parser.add_argument(
        "--seeds", type=int, default=None, help="Training seeds of the headline rows, LMD-CS and the MAEs (preset's)."
    )
    parser.add_argument(
        "--sweep_learning_rates",
        type=float,
        nargs="+",
        default=None,
        help="Instead of the benchmark, train every method once at each of these rates and report which gives the "
        "best held-out PSNR within the budget (how a preset's per-method rates are chosen).",
    )
    parser.add_argument("--budget_s", type=float, default=None, help="Training seconds per method (preset's).")
    parser.add_argument("--resolution", type=int, default=None, help="Image side (preset's).")
    parser.add_argument("--train_batch_size", type=int, default=None, help="Batch size of every method (preset's).")
    parser.add_argument("--learning_rate", type=float, default=None, help="Peak rate of every method (preset's).")
    parser.add_argument("--lmd_preset", default=None, help="LMDModel preset of the ViT methods (preset's).")
    parser.add_argument("--num_evals", type=int, default=None, help="PSNR evaluations per run (preset's).")
    parser.add_argument("--demo_crops_per_photo", type=int, default=None, help="Demo training crops per photo.")
    parser.add_argument(
        "--projector_path",
        default="auto",
        help='A trained projector folder to use; "train" trains one now with the preset\'s flags; "auto" (default) '
        "uses the preset's committed projector when the repository has it, else trains one.",
    )
    parser.add_argument("--projector_steps", type=int, default=None, help="Projector training steps (preset's).")
    parser.add_argument("--work_dir", default=None, help="Projector, latent cache and per-method rows (temp dir).")
    parser.add_argument("--plots_dir", default=None, help="Write the PSNR, loss and schedule plots here.")
    parser.add_argument("--markdown", default=None, help="Write the tables as markdown here.")
    parser.add_argument(
        "--throughput",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Also measure the cost per image with online encoding vs cached latents, and MFU.",
    )
    parser.add_argument("--device", default=default_device())
    parser.add_argument("--num_threads", type=int, default=None, help="CPU threads per process (torch's default).")
    parser.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="Budget and times in elapsed seconds, or in the process's CPU seconds (CPU only: with --num_threads 1 "
        "it measures each method's work, not how much of a shared machine it got).",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="Methods trained at once, each in its own process; more than 1 only with --clock cpu --num_threads 1 "
        "(each run's CPU seconds are its own work, however many run side by side).",
    )
    parser.add_argument(
        "--reuse_rows",
        action="store_true",
        help="Reuse a run's row already in --work_dir (same method, seed and rate) instead of training it again, "
        "e.g. to add a rate to a sweep; only for rows from the same code and settings.",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # internal: run one method
    args = parser.parse_args(argv)
    if args.methods is not None:
        check_methods(args.methods)
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}.")
    if args.jobs > 1 and (args.clock != "cpu" or args.num_threads != 1):
        parser.error("--jobs > 1 shares the machine between runs: use it with --clock cpu --num_threads 1.")
    return args


def build_preset(args: argparse.Namespace) -> EfficiencyPreset:
    preset = get_preset(args.preset).with_overrides(
        budget_s=args.budget_s,
        resolution=args.resolution,
        train_batch_size=args.train_batch_size,
        learning_rate=args.learning_rate,
        lmd_preset=args.lmd_preset,
        num_evals=args.num_evals,
        demo_crops_per_photo=args.demo_crops_per_photo,
        seeds=args.seeds,
    )
    if args.projector_steps is not None:
        flags = list(preset.projector_args)
        flags[flags.index("--max_train_steps") + 1] = str(args.projector_steps)
        preset = preset.with_overrides(projector_args=tuple(flags))
    return preset


def data_flags(preset: EfficiencyPreset, seed: int) -> list[str]:
    """The preset's data at its size: a real data set's flags, or the built-in demo photos with random flips."""
    flags = ["--resolution", str(preset.resolution), "--data_seed", str(seed)]
    if preset.data_flags:
        return flags + list(preset.data_flags)
    flags += ["--random_flip", "--demo_crops_per_photo", str(preset.demo_crops_per_photo)]
    return flags + ["--demo_eval_crops", str(preset.demo_eval_crops)]


def data_args(preset: EfficiencyPreset, seed: int) -> DataConfig:
    """:func:`data_flags` parsed (the same flags train the projector)."""
    return data_config(add_data_args(argparse.ArgumentParser()).parse_args(data_flags(preset, seed)))


def train_projector(preset: EfficiencyPreset, out_dir: str, seed: int, num_threads: int | None) -> dict:
    """Run ``training/train_projector.py`` once on the preset's data; return its metrics and the wall-clock it took."""
    flags = [*preset.projector_args, "--output_dir", out_dir, "--report_to", "none", "--seed", str(seed)]
    flags += [*data_flags(preset, seed), "--checkpointing_steps", "1000000"]
    start = time.perf_counter()
    env = {**os.environ, "OMP_NUM_THREADS": str(num_threads)} if num_threads else None
    script = os.path.join(REPO, "training", "train_projector.py")
    subprocess.run([sys.executable, script, *flags], check=True, env=env)
    return {"wall_s": round(time.perf_counter() - start, 1), **read_projector_metrics(out_dir)}


def resolve_projector(choice: str, preset: EfficiencyPreset) -> str | None:
    """The projector folder to use, or ``None`` to train one (see ``--projector_path``)."""
    if choice == "train":
        return None
    if choice != "auto":
        return choice
    committed = preset.default_projector and os.path.join(REPO, preset.default_projector)
    return committed if committed and os.path.isdir(committed) else None


def read_projector_metrics(path: str) -> dict:
    metrics = os.path.join(path, "projector_metrics.json")
    if not os.path.isfile(metrics):
        return {}
    with open(metrics) as f:
        return json.load(f)


def measure_throughput(preset: EfficiencyPreset, vae, data: BenchmarkData, args: argparse.Namespace) -> dict:
    """Cost per image of an LMD step with online encoding vs cached latents, and MFU vs a measured matmul."""
    device = torch.device(args.device)
    timer = CLOCKS[args.clock]
    ceiling, _ = device_matmul_ceiling(device, timer=timer)
    model = build_method("lmd-cs", preset, vae, seed=args.seed).model.to(device)
    images = data.train_images[: preset.train_batch_size].to(device)
    rows = lmd_cost_per_image(
        model, vae, images, mixed_precision=preset.mixed_precision, ceiling_tflops=ceiling, timer=timer
    )
    return {"method": "throughput", "matmul_ceiling_tflops": ceiling, "clock": args.clock, "rows": rows}


def run_worker(args: argparse.Namespace) -> None:
    """One method in this process: load the shared data and projector, train for the budget, write the row."""
    with open(os.path.join(args.work_dir, "preset.json")) as f:
        preset = EfficiencyPreset(**json.load(f)).with_overrides(learning_rate=args.learning_rate)
    vae = load_projector(args.projector_path).to(args.device)
    data = BenchmarkData.load(os.path.join(args.work_dir, "data.safetensors"))
    if args.worker == "throughput":
        row = measure_throughput(preset, vae, data, args)
    else:
        method = build_method(args.worker, preset, vae, seed=args.seed)
        row = train_for_budget(method, data, preset, RunSettings(args.device, args.seed, args.clock))
    with open(row_path(args.work_dir, args.worker, args.seed, args.learning_rate), "w") as f:
        json.dump(row, f)
    print(f"{args.worker} (seed {args.seed}) done", flush=True)


def row_path(work_dir: str, method: str, seed: int, learning_rate: float | None) -> str:
    suffix = f"-lr{learning_rate:g}" if learning_rate is not None else ""
    return os.path.join(work_dir, "rows", f"{method}-seed{seed}{suffix}.json")


def run_method_process(
    args: argparse.Namespace, method: str, seed: int | None = None, learning_rate: float | None = None
) -> dict:
    """Train (or measure) one method in a fresh process and return its row."""
    seed = args.seed if seed is None else seed
    flags = ["--worker", method, "--work_dir", args.work_dir, "--projector_path", args.projector_path]
    flags += ["--output", args.output, "--device", args.device, "--seed", str(seed), "--preset", args.preset]
    if args.num_threads:
        flags += ["--num_threads", str(args.num_threads)]
    if learning_rate is not None:
        flags += ["--learning_rate", repr(learning_rate)]
    flags += ["--clock", args.clock]
    path = row_path(args.work_dir, method, seed, learning_rate)
    if not (args.reuse_rows and os.path.isfile(path)):
        subprocess.run([sys.executable, os.path.abspath(__file__), *flags], check=True)
    with open(path) as f:
        return json.load(f)


def method_seeds(preset: EfficiencyPreset, method: str, first_seed: int) -> list[int]:
    """Every seed for the headline rows (LMD-CS and the MAEs) and the preset's seeded variants, the first seed for
    the others."""
    count = preset.seeds if method in (*HEADLINE_METHODS, *preset.seeded_methods) else 1
    return [first_seed + k for k in range(count)]


def run_all(args: argparse.Namespace, runs: list[tuple]) -> list[dict]:
    """``run_method_process(args, *run)`` for every run, ``--jobs`` at a time, rows in the order of ``runs``."""
    if args.jobs == 1:
        return [run_method_process(args, *run) for run in runs]
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        return list(pool.map(lambda run: run_method_process(args, *run), runs))


def sweep(args: argparse.Namespace, methods: list[str], rates: list[float]) -> dict:
    """Every method at every rate (first seed): best held-out PSNR within the budget, and the rate that wins."""
    results = {}
    every_row = run_all(args, [(method, args.seed, rate) for method in methods for rate in rates])
    for index, method in enumerate(methods):
        rows = every_row[index * len(rates) : (index + 1) * len(rates)]
        scored = [(best_psnr(row), row) for row in rows if best_psnr(row) is not None]
        entry = {
            "runs": [
                {k: row[k] for k in ("learning_rate", "steps", "final_psnr", "train_s", "mit_s")}
                | {"best_psnr": best_psnr(row)}
                for row in rows
            ]
        }
        if scored:
            entry["chosen"] = max(scored, key=lambda pair: pair[0])[1]["learning_rate"]
        results[method] = entry
        print(f"{method}: " + ", ".join(f"lr {r['learning_rate']:g} -> {r['best_psnr']}" for r in entry["runs"]))
    return results


def write_sweep(args: argparse.Namespace, preset: EfficiencyPreset, references: dict, results: dict) -> None:
    """Write the sweep's JSON; into an existing sweep of the same preset, budget and clock, replace only the
    methods swept now (so an edge rate can be added for one method without rerunning the others)."""
    setting = {"preset": preset.name, "budget_s": preset.budget_s, "clock": args.clock}
    result = {**setting, "hardware": describe_hardware(args.device), "reference_psnr": references, "sweep": {}}
    if os.path.isfile(args.output):
        with open(args.output) as f:
            previous = json.load(f)
        if all(previous.get(k) == v for k, v in setting.items()):
            result["sweep"] = previous.get("sweep", {})
    commit = git_commit(REPO)
    result["sweep"].update({method: {**entry, "commit": commit} for method, entry in results.items()})
    result["chosen"] = {method: entry["chosen"] for method, entry in result["sweep"].items() if "chosen" in entry}
    write_json(result, args.output)
    print("chosen rates: " + ", ".join(f"{m} {r:g}" for m, r in result["chosen"].items()))


def headline_line(method: str, headline: dict, target: float) -> str:
    """``method``'s time to the target over the reference MAE's, split into steps x cost per step."""
    spread = ""
    if "time_ratio_range" in headline:
        low, high = headline["time_ratio_range"]
        spread = f" (median of {headline['num_seeds']} seeds, range {low:.2f}-{high:.2f})"
    return (
        f"\n{method} reaches the target PSNR ({target:.2f} dB) in {headline['time_ratio']:.2f}x "
        f"{headline['reference']}'s time{spread} = {headline['steps_ratio']:.2f}x the steps x "
        f"{headline['step_cost_ratio']:.2f}x the cost per step (paper's claim for LMD-CS: <= 0.33x)."
    )


def write_outputs(result: dict, args: argparse.Namespace) -> None:
    write_json(result, args.output)
    parts = [setting_lines(result), results_table(result), table_1(result), table_3(result), table_5(result)]
    parts.append(throughput_table(result))
    tables = "\n\n".join(part for part in parts if part)
    print(tables)
    comparisons = {"lmd-cs": result["speedup_lmd_cs_vs_mae"], **(result.get("speedup_variants_vs_mae") or {})}
    for method, headline in comparisons.items():
        if headline:
            print(headline_line(method, headline, result["target_psnr"]))
    write_markdown(tables, args.markdown)
    if args.plots_dir:
        os.makedirs(args.plots_dir, exist_ok=True)
        name = f"efficiency_{result['preset']}"
        plot_psnr_vs_time(result, os.path.join(args.plots_dir, f"{name}_psnr_vs_time.png"))
        if any(row["method"] in ("lmd-ps", "lmd-cs") for row in result["rows"]):
            plot_loss_curves(result, os.path.join(args.plots_dir, f"{name}_loss_curves.png"))
        plot_mask_schedules(os.path.join(args.plots_dir, "mask_schedules.png"))


def main() -> None:
    args = parse_args()
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    if args.worker:
        run_worker(args)
        return
    preset = build_preset(args)
    args.work_dir = args.work_dir or tempfile.mkdtemp(prefix="lmd-efficiency-")
    os.makedirs(os.path.join(args.work_dir, "rows"), exist_ok=True)
    with open(os.path.join(args.work_dir, "preset.json"), "w") as f:
        json.dump(dataclasses.asdict(preset), f)
    flags = data_args(preset, args.seed)

    args.projector_path = resolve_projector(args.projector_path, preset)
    if args.projector_path is None:
        args.projector_path = os.path.join(args.work_dir, "projector")
        projector = {"trained_here": True, **train_projector(preset, args.projector_path, args.seed, args.num_threads)}
    else:
        projector = {"trained_here": False, "path": args.projector_path, **read_projector_metrics(args.projector_path)}
        # Every process reads one frozen snapshot, even if the source folder is rewritten during the run.
        args.projector_path = shutil.copytree(
            args.projector_path, os.path.join(args.work_dir, "projector"), dirs_exist_ok=True
        )
    vae = load_projector(args.projector_path).to(args.device)

    from accelerate import Accelerator

    train_dataset, eval_dataset = build_datasets(flags)
    data, cache = build_benchmark_data(
        flags, train_dataset, eval_dataset, vae, os.path.join(args.work_dir, "latents"), Accelerator()
    )
    data.save(os.path.join(args.work_dir, "data.safetensors"))
    token_pixels = downsample_factor(vae) * preset.patch_size
    references = latent_reference_psnr(vae, data.eval_images, preset.patch_size)
    references.update(pixel_reference_psnr(data.eval_images, token_pixels))
    train_probe = data.train_probe()
    train_references = latent_reference_psnr(vae, train_probe, preset.patch_size)
    train_references.update(pixel_reference_psnr(train_probe, token_pixels))
    del vae

    methods = args.methods or list(preset.methods or METHODS)
    if args.sweep_learning_rates:
        write_sweep(args, preset, references, sweep(args, methods, args.sweep_learning_rates))
        return
    rows = run_all(args, [(method, seed) for method in methods for seed in method_seeds(preset, method, args.seed)])
    throughput = run_method_process(args, "throughput") if args.throughput else None
    floor = max(references["mean_pixel"], references["mean_latent"])
    target_methods = HEADLINE_METHODS if preset.target_fraction else MAE_FAMILY
    target = target_psnr(rows, floor, preset.target_fraction, target_methods)
    add_time_to_target(rows, target)
    result = {
        "preset": preset.name,
        "budget_s": preset.budget_s,
        "clock": args.clock,
        "target_psnr": target,
        "hardware": describe_hardware(args.device),
        "commit": git_commit(REPO),
        "torch": torch.__version__,
        "projector": projector,
        "reference_psnr": references,
        "train_reference_psnr": train_references,
        "latent_cache": {k: v for k, v in cache.items() if k != "cache_path"},
        "num_train_images": len(data),
        "num_eval_images": int(data.eval_images.shape[0]),
        "config": dataclasses.asdict(preset),
        "rows": rows,
        "seeds": preset.seeds,
        "target_rule": (
            f"{preset.target_fraction:g} of the way from the highest floor ({floor:.2f} dB) to the lowest best PSNR "
            f"of the {', '.join(target_methods)} runs"
            if preset.target_fraction
            else "the lowest best PSNR of the masked-autoencoder rows"
        ),
        "speedup_lmd_cs_vs_mae": seeded_speedup(rows) if preset.seeds > 1 else speedup(rows),
        "speedup_variants_vs_mae": {method: seeded_speedup(rows, method) for method in preset.seeded_methods},
        "throughput": throughput,
    }
    write_outputs(result, args)


if __name__ == "__main__":
    main()
