"""The projector training engine behind ``training/train_projector.py`` (method.md §2): a diffusers ``VQModel`` or
``AutoencoderKL`` with a patch discriminator (``model``), its step and run (``trainer``), and its held-out
evaluation and saved folder (``outputs``)."""

from .model import (
    AutoencoderWithLoss,
    PatchDiscriminator,
    adaptive_weight,
    build_discriminator,
    build_projector,
    discriminator_loss,
    generator_loss,
    init_codebook_from_data,
    kl_loss,
    reconstruction_loss,
)
from .outputs import evaluate_projector
from .trainer import ProjectorLossConfig, ProjectorTrainer, train_projector

__all__ = [
    "AutoencoderWithLoss",
    "PatchDiscriminator",
    "ProjectorLossConfig",
    "ProjectorTrainer",
    "adaptive_weight",
    "build_discriminator",
    "build_projector",
    "discriminator_loss",
    "evaluate_projector",
    "generator_loss",
    "init_codebook_from_data",
    "kl_loss",
    "reconstruction_loss",
    "train_projector",
]
