#!/usr/bin/env python
"""Generation quality against diffusion U-Nets at equal training time (paper Tables 3 and 4, measured).

Class-conditional Fashion-MNIST (32 px): LMD-CS with the MSE head (``lmd-mse``), LMD with the diffusion head
(``lmd-diffusion``), LMD with a categorical head over the projector's codes (``lmd-categorical``), a
class-conditional diffusers ``UNet2DModel`` DDPM on pixels (``ddpm-pixel``) and LDM on the same projector's latents
(``ldm-latent``), and aMUSEd's ``UVit2DModel`` on the projector's VQ codes (``amused-tokens``, MaskGIT decoding with
``AmusedScheduler``), each trained for the same budget on the same images, then sampled with a fixed setting and one
guidance scale and scored by FID on a Fashion-MNIST classifier's features (not comparable to Inception FID),
conditional accuracy and precision / recall, with the sampling time per image.
Each method's final (EMA) model is saved under ``<work_dir>/models/<method>`` in its own diffusers layout.

    python benchmarks/bench_generation.py --preset fmnist-cpu \\
        --output benchmarks/results/generation_fmnist_cpu.json --plots_dir docs/images
    # smoke test (a couple of minutes):
    python benchmarks/bench_generation.py --budget_s 10 --num_evals 2 --eval_samples 50 --final_samples 100 \\
        --max_train_samples 2000 --output /tmp/gen.json --plots_dir /tmp/gen
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile

import torch

from diffusers_lmd.data import fashion_mnist_data_config
from diffusers_lmd.training import load_projector
from lmd_bench.budget import CLOCKS, RunSettings
from lmd_bench.cli import REPO, bench_parser, default_device, write_json, write_markdown
from lmd_bench.generation_bench import (
    GENERATION_METHODS,
    check_generation_methods,
    load_classifier,
    run_generation_benchmark,
)
from lmd_bench.generation_loop import build_generation_data
from lmd_bench.generation_presets import GENERATION_PRESETS, get_generation_preset
from lmd_bench.generation_report import (
    floor_lines,
    generation_table,
    headline,
    plot_fid_vs_time,
    save_sample_grid,
    table_3,
    table_4,
)

OVERRIDES = ("budget_s", "num_evals", "eval_samples", "final_samples", "guidance_scale", "label_dropout", "ema_decay",
             "ddim_steps", "lmd_steps", "lmd_head_steps", "lmd_temperature", "train_batch_size", "learning_rate",
             "max_train_samples", "amused_steps")  # fmt: skip


HEAD_FLAGS = {"lmd_diffusion_batch_mul": "diffusion_batch_mul", "lmd_diffusion_head_width": "diffusion_head_width"}
# The ViT's encoder size, for every LMD method (the preset's: width 128, 4 blocks).
VIT_FLAGS = {"lmd_hidden_size": "hidden_size", "lmd_num_layers": "num_layers"}


def parse_args(argv=None) -> argparse.Namespace:
    parser = bench_parser(__doc__, GENERATION_PRESETS, "fmnist-cpu")
    parser.add_argument("--methods", nargs="+", default=list(GENERATION_METHODS), help="Methods (default: all).")
    parser.add_argument("--budget_s", type=float, help="Training seconds per method (preset's).")
    parser.add_argument("--num_evals", type=int, help="Points of the FID curve, the last at the end (preset's).")
    parser.add_argument("--eval_samples", type=int, help="Samples per curve point (preset's).")
    parser.add_argument("--final_samples", type=int, help="Samples of the final score (preset's).")
    parser.add_argument("--guidance_scale", type=float, help="Classifier-free guidance of every method (preset's).")
    parser.add_argument("--label_dropout", type=float, help="Training label dropout of every method (preset's).")
    parser.add_argument("--ema_decay", type=float, help="Largest weight-EMA decay, 0 = raw weights (preset's).")
    parser.add_argument("--ddim_steps", type=int, help="DDIM steps of the U-Nets (preset's).")
    parser.add_argument("--lmd_steps", type=int, help="LMD's reveal steps (preset's).")
    parser.add_argument("--lmd_head_steps", type=int, help="Steps of LMD's diffusion head (preset's).")
    parser.add_argument(
        "--lmd_temperature",
        type=float,
        help="Temperature of LMD's sampling heads, > 0 (preset's: 1, the model's own distribution).",
    )
    parser.add_argument("--lmd_diffusion_batch_mul", type=int,
                        help="lmd-diffusion's noised copies per token (preset's: 1; MAR's: 4).")  # fmt: skip
    parser.add_argument("--lmd_diffusion_head_width", type=int,
                        help="lmd-diffusion's head width (preset's: 64; MAR's: the decoder's, 128 here).")  # fmt: skip
    parser.add_argument("--lmd_hidden_size", type=int,
                        help="Encoder width of every LMD method's ViT (preset's: 128).")  # fmt: skip
    parser.add_argument("--lmd_num_layers", type=int,
                        help="Encoder blocks of every LMD method's ViT (preset's: 4).")  # fmt: skip
    parser.add_argument("--amused_steps", type=int, help="amused-tokens' MaskGIT decoding steps (preset's).")
    parser.add_argument("--train_batch_size", type=int, help="Batch size of every method (preset's).")
    parser.add_argument("--learning_rate", type=float, help="Peak rate of every method (preset's).")
    parser.add_argument("--max_train_samples", type=int, help="Train on a seeded subset (smoke tests).")
    parser.add_argument("--projector_path", default=None, help="Projector folder (the preset's committed one).")
    parser.add_argument("--classifier_path", default=None, help="Feature classifier folder (the preset's).")
    parser.add_argument("--work_dir", default=None, help="Latent cache, final models/<method> (a temp dir).")
    parser.add_argument("--plots_dir", default=None, help="Write the FID-vs-time plot and the sample grids here.")
    parser.add_argument("--markdown", default=None, help="Write the tables as markdown here.")
    parser.add_argument("--device", default=default_device())
    parser.add_argument("--num_threads", type=int, default=None, help="CPU threads (torch's default).")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall", help="Elapsed or process CPU seconds.")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    check_generation_methods(args.methods)
    head_flags = [f"--{f}" for f in HEAD_FLAGS if getattr(args, f) is not None]
    if head_flags and "lmd-diffusion" not in args.methods:
        parser.error(f"{' and '.join(head_flags)} size lmd-diffusion's head, which --methods leaves out.")
    if any(getattr(args, f) is not None and getattr(args, f) < 1 for f in HEAD_FLAGS):
        parser.error(f"{' and '.join(head_flags)} must be at least 1.")
    vit_flags = [f"--{f}" for f in VIT_FLAGS if getattr(args, f) is not None]
    if vit_flags and not any(method.startswith("lmd-") for method in args.methods):
        parser.error(f"{' and '.join(vit_flags)} size LMD's ViT, and --methods has no LMD method.")
    if any(getattr(args, f) is not None and getattr(args, f) < 1 for f in VIT_FLAGS):
        parser.error(f"{' and '.join(vit_flags)} must be at least 1.")
    return args


def head_overrides(preset_heads: dict, args: argparse.Namespace) -> dict:
    """The preset's per-method LMD head arguments with the diffusion-head flags applied."""
    changed = {HEAD_FLAGS[f]: getattr(args, f) for f in HEAD_FLAGS if getattr(args, f) is not None}
    if not changed:
        return preset_heads
    return {**preset_heads, "lmd-diffusion": {**preset_heads.get("lmd-diffusion", {}), **changed}}


def vit_overrides(preset_overrides: dict, args: argparse.Namespace) -> dict:
    """The preset's LMD architecture overrides with the ViT-size flags applied."""
    return {**preset_overrides, **{VIT_FLAGS[f]: getattr(args, f) for f in VIT_FLAGS if getattr(args, f) is not None}}


def _folder(given: str | None, default: str, what: str, hint: str) -> str:
    path = given or os.path.join(REPO, default)
    if not os.path.isdir(path):
        raise ValueError(f"No {what} at {path}: {hint}.")
    return path


def write_outputs(result: dict, samples: dict, label_names: list[str], args: argparse.Namespace) -> None:
    write_json(result, args.output)
    tables = "\n\n".join([floor_lines(result), generation_table(result), table_3(result), table_4(result)])
    print(tables + "\n\n" + headline(result))
    write_markdown(tables, args.markdown)
    if args.plots_dir:
        os.makedirs(args.plots_dir, exist_ok=True)
        name = f"generation_{result['preset'].replace('-', '_')}"
        plot_fid_vs_time(result, os.path.join(args.plots_dir, f"{name}_fid_vs_time.png"))
        for method, (images, labels) in samples.items():
            save_sample_grid(images, labels, label_names, os.path.join(args.plots_dir, f"{name}_{method}.png"))


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    preset = get_generation_preset(args.preset)
    preset = preset.with_overrides(**{k: getattr(args, k) for k in OVERRIDES}, lmd_heads=head_overrides(
        preset.lmd_heads, args), lmd_overrides=vit_overrides(preset.lmd_overrides, args))  # fmt: skip
    hint = "pass --projector_path (assets/demo-projector will do for a smoke test)"
    projector_path = _folder(args.projector_path, preset.default_projector, "projector", hint)
    hint = "train one with training/train_feature_classifier.py or pass --classifier_path"
    classifier_path = _folder(args.classifier_path, preset.default_classifier, "classifier", hint)
    vae = load_projector(projector_path).to(args.device)
    classifier, classifier_info = load_classifier(classifier_path, args.device)
    data_options = fashion_mnist_data_config(
        random_flip=True, data_seed=args.seed, max_train_samples=preset.max_train_samples or None
    )
    work_dir = args.work_dir or tempfile.mkdtemp(prefix="lmd-generation-")

    from accelerate import Accelerator

    data, cache = build_generation_data(data_options, vae, os.path.join(work_dir, "latents"), Accelerator())
    save_dir = os.path.join(work_dir, "models")
    print(f"final models will be saved under {save_dir}")
    result, samples = run_generation_benchmark(
        preset, args.methods, vae, data, classifier, RunSettings(args.device, args.seed, args.clock), repo=REPO,
        save_dir=save_dir,
    )  # fmt: skip
    result["classifier"] = classifier_info
    result["projector"] = {"path": os.path.relpath(projector_path, REPO), **_projector_metrics(projector_path)}
    result["latent_cache"] = {k: v for k, v in cache.items() if k != "cache_path"}
    write_outputs(result, samples, data.label_names, args)
    return result


def _projector_metrics(path: str) -> dict:
    metrics = os.path.join(path, "projector_metrics.json")
    if not os.path.isfile(metrics):
        return {}
    with open(metrics) as f:
        recorded = json.load(f)
    return {k: recorded[k] for k in ("train_seconds", "global_step", "eval_psnr", "projector_class") if k in recorded}


if __name__ == "__main__":
    main()
