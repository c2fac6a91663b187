"""The projector training engine behind ``training/train_projector.py`` (method.md §2): a diffusers ``VQModel`` or
``AutoencoderKL`` with a patch discriminator (``model``, which also holds the losses), its step and run
(``trainer``), and its held-out evaluation and saved folder (``outputs``). The package exports the engine; the loss
functions are ``diffusers_lmd.training.projector.model``'s."""

from .model import AutoencoderWithLoss, PatchDiscriminator, build_projector
from .outputs import evaluate_projector
from .trainer import ProjectorLossConfig, ProjectorTrainer, train_projector

__all__ = [
    "AutoencoderWithLoss",
    "PatchDiscriminator",
    "ProjectorLossConfig",
    "ProjectorTrainer",
    "build_projector",
    "evaluate_projector",
    "train_projector",
]
