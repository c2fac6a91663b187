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
import sys
import time
from pathlib import Path

import diffusers

from diffusers_lmd import LMDPipeline
from diffusers_lmd.metrics.feature_classifier import FeatureClassifier
from diffusers_lmd.training.demo_report import FIGURES, SCORES_FILE, format_scores, write_demo_report
from diffusers_lmd.training.lmd_args import build_lmd_parser, check_lmd_args
from diffusers_lmd.training.lmd_trainer import LMDTrainer

REPO = Path(__file__).resolve().parents[1]
DEMO_DEFAULTS = dict(
    projector_path=str(REPO / "assets" / "fashion-mnist-projector"),
    output_dir="demo-output",
    dataset_name="fashion_mnist",
    resolution=32,
    pad_to_resolution=True,
    label_column="label",
    conditioning_dropout_prob=0.1,
    head_type="mse",
    mask_schedule="cosine",
    mask_ratio_min=0.15,
    mask_ratio_max=1.0,
    preset="small",
    hidden_size=128,
    num_layers=4,
    num_attention_heads=4,
    decoder_hidden_size=128,
    decoder_num_layers=2,
    decoder_num_attention_heads=4,
    max_train_samples=20000,  # a third of the split: encoding all 60,000 once would take ~3 of the demo's minutes
    train_batch_size=64,
    max_train_steps=1200,
    learning_rate=1e-3,
    lr_warmup_steps=100,
    checkpointing_steps=500,
    checkpoints_total_limit=1,
    validation_steps=1_000_000,  # one held-out evaluation, at the end
    max_eval_samples=1000,
    report_to="none",
)
# The figures the README shows: file in --output_dir -> name under --figures_dir.
README_FIGURES = {
    **{name: name for name in FIGURES.values()},
    "loss_curve.png": "demo_loss_curve.png",
    "mask_schedule.png": "demo_mask_schedule.png",
}


def main(argv=None) -> dict:
    parser = build_lmd_parser(description=__doc__)
    parser.set_defaults(**DEMO_DEFAULTS)
    demo = parser.add_argument_group("demo")
    demo.add_argument(
        "--classifier_path",
        default=str(REPO / "assets" / "fashion-mnist-classifier"),
        help="The feature classifier that scores generated samples (conditional accuracy); 'none' skips it.",
    )
    demo.add_argument("--guidance_scale", type=float, default=3.0, help="Classifier-free guidance of the samples.")
    demo.add_argument("--accuracy_samples_per_class", type=int, default=20, help="Samples scored per class.")
    demo.add_argument("--figures_dir", default=None, help="Also copy the figures here (e.g. docs/images).")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    if args.train_data_dir is not None and "--dataset_name" not in argv:
        args.dataset_name = None  # a folder of images (or of Fashion-MNIST's IDX files) replaces the default data
    if args.latent_cache_dir is None:
        args.latent_cache_dir = str(Path(args.output_dir) / "latent_cache")
    check_lmd_args(args)

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
