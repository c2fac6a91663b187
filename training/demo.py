#!/usr/bin/env python
"""The built-in demo: a class-conditional LMD on Fashion-MNIST in a few minutes on two CPU cores.

    python training/demo.py --output_dir demo-output                      # what `make demo` runs
    python training/demo.py --output_dir demo-output --figures_dir docs/images   # also refresh the README's figures

Trains on the training split through the committed projector (assets/fashion-mnist-projector), saves an
LMDPipeline to --output_dir, and writes, from test-split images the model never saw: a reconstruction figure
(original | 75 % masked | reconstruction, one image per class), an inpainting figure, a class-conditional
generation figure (one labelled row per class) and the loss and mask-ratio plots. It prints the held-out PSNR
beside the two trivial floors and the projector's ceiling, and the conditional accuracy of generated samples
under the committed feature classifier (assets/fashion-mnist-classifier). Any train_lmd.py flag overrides the
demo's settings (e.g. --max_train_steps 200 for a quicker look); the run resumes with
--resume_from_checkpoint latest like any other.
"""

import json
import shutil
import time
from pathlib import Path

import diffusers

from diffusers_lmd import LMDPipeline
from diffusers_lmd.metrics.feature_classifier import FeatureClassifier
from diffusers_lmd.training import LMDTrainer
from diffusers_lmd.training.args import parse_demo_args
from diffusers_lmd.training.demo_report import FIGURES, SCORES_FILE, format_scores, write_demo_report

REPO = Path(__file__).resolve().parents[1]
# The figures the README shows: file in --output_dir -> name under --figures_dir.
README_FIGURES = {
    **{name: name for name in FIGURES.values()},
    "loss_curve.png": "demo_loss_curve.png",
    "mask_schedule.png": "demo_mask_schedule.png",
}


def main(argv=None) -> dict:
    args = parse_demo_args(argv, description=__doc__, repo=REPO)

    start = time.perf_counter()
    trainer = LMDTrainer(args)
    result = trainer.train()
    trained = time.perf_counter()
    diffusers.utils.logging.set_verbosity_warning()  # the report's loads need no per-weight messages
    pipe = LMDPipeline.from_pretrained(args.output_dir)  # the saved folder is what a user loads
    classifier = None if args.classifier_path == "none" else FeatureClassifier.from_pretrained(args.classifier_path)
    scores = write_demo_report(
        pipe,
        trainer.eval_dataset,
        args.output_dir,
        result.eval.psnr,
        classifier=classifier.eval() if classifier is not None else None,
        guidance_scale=args.guidance_scale,
        accuracy_samples_per_class=args.accuracy_samples_per_class,
        seed=args.seed,
    )
    scores.update(
        train_steps=result.global_step,
        train_s=round(result.train_seconds, 1),
        total_s=round(time.perf_counter() - start, 1),
        report_s=round(time.perf_counter() - trained, 1),
    )
    with open(Path(args.output_dir) / SCORES_FILE, "w") as f:
        json.dump(scores, f, indent=1)
    if args.figures_dir:
        Path(args.figures_dir).mkdir(parents=True, exist_ok=True)
        for source, target in README_FIGURES.items():
            shutil.copyfile(Path(args.output_dir) / source, Path(args.figures_dir) / target)
    print(f"Trained {result.global_step} steps in {result.train_seconds / 60:.1f} min "
          f"({scores['total_s'] / 60:.1f} min in all); pipeline saved to {args.output_dir}/")  # fmt: skip
    print(format_scores(scores))
    return scores


if __name__ == "__main__":
    main()
