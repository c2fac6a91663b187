#!/usr/bin/env python
"""Train the frozen projector of LMD: a diffusers ``VQModel`` (or ``AutoencoderKL``) with a patch discriminator.

    accelerate launch training/train_projector.py --output_dir my-projector          # built-in demo data
    accelerate launch training/train_projector.py --train_data_dir ./images --resolution 256 \\
        --block_out_channels 128 256 512 512 --num_vq_embeddings 8192 --output_dir my-projector

The output folder loads with ``VQModel.from_pretrained(output_dir)`` and stores the latent ``scaling_factor``
estimated on the training images; pass it to ``training/train_lmd.py --projector_path``.
"""

from diffusers_lmd.training.args import parse_projector_args
from diffusers_lmd.training.projector import train_projector


def parse_args(argv=None):
    """The script's flags (:func:`~diffusers_lmd.training.args.parse_projector_args`), its docstring as ``--help``."""
    return parse_projector_args(argv, description=__doc__)


if __name__ == "__main__":
    train_projector(parse_args())
