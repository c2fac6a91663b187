"""The flags of ``training/evaluate_fid.py``: FID and KID between two image sources on a named feature network,
and their conversion to the :class:`~diffusers_lmd.metrics.ImageSetConfig` the library scores with."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import fields

import torch

from ...metrics import FEATURE_NETWORKS, ImageSetConfig
from .common import HelpFormatter, options_from_args

DEFAULTS = {f.name: f.default for f in fields(ImageSetConfig)}  # the flags' defaults are the options' defaults
DEFAULT_FEATURE_NETWORK = "inception"


def build_evaluate_fid_parser(description: str | None = None) -> argparse.ArgumentParser:
    """The parser of ``evaluate_fid.py``."""
    parser = argparse.ArgumentParser(
        description=description,
        formatter_class=HelpFormatter,
    )
    sources = parser.add_argument_group("images")
    source_help = (
        "A folder of images (imagefolder), a dataset saved with save_to_disk, or a datasets dataset id "
        "(e.g. fashion_mnist)."
    )
    sources.add_argument("--real", required=True, help=f"The reference images. {source_help}")
    sources.add_argument("--generated", required=True, help=f"The images to score. {source_help}")
    sources.add_argument("--real_split", default=None, help="Split of --real; None: train, or the only split.")
    sources.add_argument(
        "--generated_split", default=None, help="Split of --generated; None: train, or the only split."
    )
    sources.add_argument("--image_column", default=None, help="Image column of dataset sources; None: detected.")
    sources.add_argument(
        "--resolution",
        type=int,
        default=DEFAULTS["resolution"],
        help="Side images are read at (shorter side resized, centre crop); None: the feature network's input size. "
        "The network then resizes to its own input size.",
    )
    sources.add_argument(
        "--max_samples",
        type=int,
        default=DEFAULTS["max_samples"],
        help="Score at most this many images of each source (a seeded random subset); None: all.",
    )
    sources.add_argument(
        "--cache_dir",
        default=DEFAULTS["cache_dir"],
        help="Where datasets keeps what it downloads; None: its own cache.",
    )
    network = parser.add_argument_group("feature network")
    network.add_argument(
        "--feature_network",
        default=DEFAULT_FEATURE_NETWORK,
        help=f"One of {', '.join(FEATURE_NETWORKS)}, or a local folder of any transformers vision model (AutoModel). "
        "Only inception gives numbers comparable with published FID (see docs/pipeline.md, 'FID for your own data').",
    )
    network.add_argument(
        "--feature_network_path",
        default=None,
        help="Where the named network's weights are: a save_pretrained folder or Hub id (dinov2, clip, "
        "fashion-mnist-classifier), or torch-fidelity's Inception weights file (inception). None: "
        + "; ".join(
            f"{name}: {info.default_path or 'downloaded once by torch-fidelity'}"
            for name, info in FEATURE_NETWORKS.items()
        ),
    )
    run = parser.add_argument_group("run")
    run.add_argument("--batch_size", type=int, default=DEFAULTS["batch_size"], help="Images per feature batch.")
    run.add_argument(
        "--dataloader_num_workers", type=int, default=DEFAULTS["dataloader_num_workers"], help="Data-loading processes."
    )
    run.add_argument("--kid_subset_size", type=int, default=DEFAULTS["kid_subset_size"], help="KID subset size.")
    run.add_argument("--kid_subsets", type=int, default=DEFAULTS["kid_subsets"], help="KID subsets.")
    run.add_argument("--seed", type=int, default=DEFAULTS["seed"], help="Seeds the --max_samples and KID subsets.")
    run.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu", help="Where the feature network runs."
    )
    run.add_argument("--output", default=None, help="Write the scores to this JSON file; None: print only.")
    return parser


def parse_evaluate_fid_args(argv: Sequence[str] | None = None, description: str | None = None) -> argparse.Namespace:
    """Parse ``evaluate_fid.py`` flags (``sys.argv`` when ``argv`` is ``None``)."""
    return build_evaluate_fid_parser(description).parse_args(argv)


def image_set_config(args: argparse.Namespace) -> ImageSetConfig:
    """The evaluation options of parsed flags; raises a ``ValueError`` naming the first flag that cannot work."""
    return options_from_args(ImageSetConfig, args)
