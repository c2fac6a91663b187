#!/usr/bin/env python
"""The built-in demo: train LMD on the scikit-image demo photos in a few minutes on two CPU cores.

    python training/demo.py --output_dir demo-output        # what `make demo` runs

Uses the small projector the project trained itself (assets/demo-projector), holds the "chelsea" photo out,
saves an LMDPipeline to --output_dir with reconstructions.png (originals, masked inputs, reconstructions of
held-out crops), loss and mask-ratio plots and a model card, and prints the held-out PSNR. Any train_lmd.py flag
overrides the demo's settings, e.g. --max_train_steps 100 for a quicker look.
"""

import sys
import time
from pathlib import Path

from diffusers import VQModel

from diffusers_lmd.training.lmd_args import build_lmd_parser, check_lmd_args
from diffusers_lmd.training.lmd_trainer import train_lmd

DEMO_PROJECTOR = Path(__file__).resolve().parents[1] / "assets" / "demo-projector"
# About eight minutes of training on two cores; docs/training.md records a run.
DEMO_DEFAULTS = dict(
    projector_path=str(DEMO_PROJECTOR),
    output_dir="demo-output",
    preset="small",
    train_batch_size=32,
    max_train_steps=600,
    learning_rate=3e-4,
    lr_warmup_steps=30,
    random_flip=True,
    checkpointing_steps=200,
    checkpoints_total_limit=1,
    validation_steps=100,
    max_eval_samples=33,
    report_to="none",
)


def projector_resolution(path: str, default: int = 64) -> int:
    """The image size the projector was trained at (its config's ``sample_size``); a bad path fails later, clearly."""
    try:
        return int(VQModel.load_config(path).get("sample_size") or default)
    except (OSError, ValueError):
        return default


def main(argv=None) -> None:
    parser = build_lmd_parser(description=__doc__)
    parser.set_defaults(**DEMO_DEFAULTS, resolution=None)
    args = parser.parse_args(argv)
    if args.latent_cache_dir is None:
        args.latent_cache_dir = str(Path(args.output_dir) / "latent_cache")
    if args.resolution is None:
        args.resolution = projector_resolution(args.projector_path)
    check_lmd_args(args)
    start = time.perf_counter()
    result = train_lmd(args)
    print(f"Trained {result.global_step} steps in {result.train_seconds / 60:.1f} min "
          f"({(time.perf_counter() - start) / 60:.1f} min in all); pipeline saved to {args.output_dir}/")  # fmt: skip
    print(f"held-out PSNR: {result.eval.psnr:.2f} dB")


if __name__ == "__main__":
    main(sys.argv[1:])
