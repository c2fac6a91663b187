#!/usr/bin/env python
"""Train the frozen projector of LMD: a diffusers ``VQModel`` (or ``AutoencoderKL``) with a patch discriminator.

    accelerate launch training/train_projector.py --output_dir my-projector          # built-in demo data
    accelerate launch training/train_projector.py --train_data_dir ./images --resolution 256 \\
        --block_out_channels 128 256 512 512 --num_vq_embeddings 8192 --output_dir my-projector

The output folder loads with ``VQModel.from_pretrained(output_dir)`` and stores the latent ``scaling_factor``
estimated on the training images; pass it to ``training/train_lmd.py --projector_path``.
"""

import argparse

from diffusers_lmd.data import add_data_args
from diffusers_lmd.training import add_training_args
from diffusers_lmd.training.projector_model import add_projector_args
from diffusers_lmd.training.projector_training import train_projector


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_args(parser)
    add_training_args(parser)
    add_projector_args(parser)
    # Autoencoder/GAN defaults (VQGAN's Adam betas; no weight decay) and a run short enough for a CPU.
    parser.set_defaults(
        output_dir="projector-output",
        learning_rate=1e-3,
        adam_beta1=0.5,
        adam_beta2=0.9,
        adam_weight_decay=0.0,
        lr_scheduler="cosine",
        train_batch_size=16,
        max_train_steps=2000,
        validation_steps=250,
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    train_projector(parse_args())
