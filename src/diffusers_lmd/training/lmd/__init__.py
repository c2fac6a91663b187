"""The LMD training engine behind ``training/train_lmd.py``: :class:`LMDTrainer` (``trainer``), what it builds before
its first step (``setup``), how held-out evaluation sees the model (``evaluation``) and what a run writes
(``outputs``)."""

from .evaluation import UnconditionalPredictor, evaluation_model
from .outputs import LMDTrainingResult, register_transformer_hooks, save_pipeline
from .setup import build_lmd_model, load_projector, projector_dtype
from .trainer import LMDTrainer, train_lmd

__all__ = [
    "LMDTrainer",
    "LMDTrainingResult",
    "UnconditionalPredictor",
    "build_lmd_model",
    "evaluation_model",
    "load_projector",
    "projector_dtype",
    "register_transformer_hooks",
    "save_pipeline",
    "train_lmd",
]
