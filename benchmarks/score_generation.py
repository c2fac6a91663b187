#!/usr/bin/env python
"""Re-score models the generation benchmark saved, with the benchmark's scorer, and optionally another sampler.

Each folder is a final model ``bench_generation.py`` saved under ``<work_dir>/models/<method>`` (any method: its
``class_labels.json`` names it and its sampler setting). Samples are class-balanced and drawn from the benchmark's
own sampling seed, so with no overrides the scores are the benchmark's final ones for that row. The overrides try
other samplers on the same weights: guidance, steps, and for LMD's heads the head steps and temperature.

Besides FID (on the project's Fashion-MNIST classifier's features), conditional accuracy, the pooled precision /
recall and density / coverage, it reports per-class precision / recall / coverage (each class's samples against
that class's test images; averaged, and class by class in ``per_class`` and a second table, to see which classes
a gap is in), and the same scores for as many real training images, the metric's floor.

    python benchmarks/score_generation.py /tmp/lmd-generation/models/lmd-diffusion \
        /tmp/lmd-generation/models/ldm-latent --output /tmp/rescore.json
    python benchmarks/score_generation.py /tmp/lmd-generation/models/lmd-diffusion --guidance_scale 1 \
        --lmd_temperature 1.0 --output /tmp/rescore_g1.json
"""

from __future__ import annotations

import argparse
import os

import torch

from diffusers_lmd.data import fashion_mnist_data_config, load_labelled_tensors
from diffusers_lmd.environment import describe_hardware, git_commit
from diffusers_lmd.metrics import FID_NAME, GenerationScorer
from lmd_bench.cli import REPO, default_device, write_json
from lmd_bench.generation_bench import load_classifier, load_generation_method
from lmd_bench.generation_lmd import LMDGenerationMethod
from lmd_bench.generation_loop import balanced_subset, sample_classes
from lmd_bench.generation_presets import get_generation_preset
from lmd_bench.generation_report import save_sample_grid

COLUMNS = ("fid", "conditional_accuracy", "precision", "recall", "coverage", "class_precision", "class_recall",
           "class_coverage", "samples_per_s")  # fmt: skip


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dirs", nargs="+", help="Folders saved by bench_generation.py (<work_dir>/models/*).")
    parser.add_argument("--output", required=True, help="Where to write the JSON result.")
    parser.add_argument("--num_samples", type=int, default=2000, help="Class-balanced samples per model.")
    parser.add_argument("--guidance_scale", type=float, help="Classifier-free guidance (the fmnist-cpu preset's).")
    parser.add_argument("--num_inference_steps", type=int, help="Reveal / DDIM / MaskGIT steps (the saved ones).")
    parser.add_argument("--lmd_head_steps", type=int, help="Steps of LMD's diffusion head (the saved ones).")
    parser.add_argument("--lmd_temperature", type=float, help="Temperature of LMD's sampling heads (the saved one).")
    parser.add_argument("--classifier_path", help="Feature classifier folder (the preset's).")
    parser.add_argument("--plots_dir", help="Write each model's sample grid here.")
    parser.add_argument("--device", default=default_device())
    parser.add_argument("--num_threads", type=int, help="torch.set_num_threads (1 for CPU-time comparisons).")
    args = parser.parse_args(argv)
    if args.num_samples < 10:
        parser.error(f"--num_samples must be at least 10 (one per class and then some), got {args.num_samples}.")
    for flag in ("num_inference_steps", "lmd_head_steps"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            parser.error(f"--{flag} must be at least 1, got {getattr(args, flag)}.")
    if args.lmd_temperature is not None and args.lmd_temperature <= 0:
        parser.error(f"--lmd_temperature must be > 0, got {args.lmd_temperature}.")
    missing = [d for d in args.model_dirs if not os.path.isdir(d)]
    if missing:
        parser.error(f"No such model folder: {', '.join(missing)}.")
    return args


def apply_overrides(method, args: argparse.Namespace) -> None:
    """Set the sampler overrides on a loaded method; LMD-only ones on another method are refused (they would do
    nothing), as is a head-step count for an LMD head without a diffusion head."""
    lmd_only = [f"--{f}" for f in ("lmd_head_steps", "lmd_temperature") if getattr(args, f) is not None]
    if lmd_only and not isinstance(method, LMDGenerationMethod):
        raise ValueError(f"{' and '.join(lmd_only)} only change LMD's sampling heads; {method.name} has none.")
    if args.lmd_head_steps is not None and method.model.diffusion_head is None:
        raise ValueError(f"--lmd_head_steps changes a diffusion head; {method.name} has none.")
    if args.lmd_temperature is not None and method.model.config.head_type == "mse":
        raise ValueError(f"--lmd_temperature changes a sampling head; {method.name}'s MSE head predicts the mean.")
    if args.num_inference_steps is not None:
        method.num_inference_steps = args.num_inference_steps
    if args.lmd_head_steps is not None:
        method.num_head_inference_steps = args.lmd_head_steps
    if args.lmd_temperature is not None:
        method.temperature = args.lmd_temperature


def score_folder(folder, args, scorer, guidance_scale: float, batch_size: int, label_names) -> dict:
    """Load, sample and score one saved model; returns its row."""
    method = load_generation_method(folder)
    apply_overrides(method, args)
    method.model.to(args.device)
    if getattr(method, "vae", None) is not None:
        method.vae.to(args.device)
    images, labels, seconds = sample_classes(method, args.num_samples, guidance_scale, batch_size,
                                             torch.device(args.device), "cpu")  # fmt: skip
    scores = scorer.score(images, labels, per_class=True)
    scores["per_class"] = named_classes(scores["per_class"], label_names)
    if args.plots_dir:
        os.makedirs(args.plots_dir, exist_ok=True)
        save_sample_grid(images, labels, label_names, os.path.join(args.plots_dir, f"rescore_{method.name}.png"))
    return {
        "method": method.name,
        "model_dir": folder,
        "sampler": method.sampler_setting(),
        "guidance_scale": guidance_scale,
        **scores,
        "sample_cpu_s": round(seconds, 3),
        "samples_per_s": args.num_samples / seconds if seconds > 0 else None,
    }


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    preset = get_generation_preset("fmnist-cpu")
    guidance_scale = preset.guidance_scale if args.guidance_scale is None else args.guidance_scale
    classifier, classifier_info = load_classifier(
        args.classifier_path or os.path.join(REPO, preset.default_classifier), args.device
    )
    train, test, label_names = load_labelled_tensors(fashion_mnist_data_config())
    scorer = GenerationScorer(classifier, test.images, reference_labels=test.labels)
    real = balanced_subset(train, args.num_samples, len(label_names))
    result = {
        "benchmark": "generation rescore",
        "metric": FID_NAME,
        "hardware": describe_hardware(torch.device(args.device)),
        "commit": git_commit(REPO),
        "torch": torch.__version__,
        "clock": "cpu",
        "classifier": classifier_info,
        "num_samples": args.num_samples,
        "real_train_images": scorer.score(real.images, real.labels, per_class=True),
        "rows": [],
    }
    result["real_train_images"]["per_class"] = named_classes(result["real_train_images"]["per_class"], label_names)
    print(f"{'model':<40} " + " ".join(f"{c:>18}" for c in COLUMNS))
    floor = result["real_train_images"]
    print(f"{'real training images':<40} " + " ".join(f"{_cell(floor.get(c)):>18}" for c in COLUMNS))
    for folder in args.model_dirs:
        row = score_folder(folder, args, scorer, guidance_scale, preset.sample_batch_size, label_names)
        result["rows"].append(row)
        print(f"{folder[-40:]:<40} " + " ".join(f"{_cell(row.get(c)):>18}" for c in COLUMNS))
    print_per_class(result, label_names)
    write_json(result, args.output)
    return result


def named_classes(per_class: dict, label_names) -> dict:
    """The scorer's ``{class index: scores}`` keyed by class name, in class order (JSON keys are strings)."""
    return {label_names[c]: scores for c, scores in sorted(per_class.items())}


def print_per_class(result: dict, label_names) -> None:
    """Recall / coverage of each class, one column pair per scored set, the real images first."""
    sets = [("real", result["real_train_images"])] + [(row["method"], row) for row in result["rows"]]
    print(f"\n{'class (recall / coverage)':<26} " + " ".join(f"{name[:17]:>17}" for name, _ in sets))
    for name in label_names:
        cells = []
        for _, scores in sets:
            class_scores = scores["per_class"].get(name)
            cells.append(
                "-" if class_scores is None else f"{class_scores['recall']:.2f} / {class_scores['coverage']:.2f}"
            )
        print(f"{name:<26} " + " ".join(f"{cell:>17}" for cell in cells))


def _cell(value) -> str:
    return "-" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    main()
