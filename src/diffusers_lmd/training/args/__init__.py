"""Every flag of the training scripts, one file per script family: ``common`` (run, optimiser, precision,
checkpoints, logging, Hub, pretrained models), ``data``, ``lmd`` (``train_lmd.py``), ``projector``
(``train_projector.py``), ``finetune`` (``finetune_classifier.py``), ``demo`` and ``feature_classifier``.

The scripts build their parsers here and convert what they parse into the typed options the library takes
(:func:`data_config`, :func:`accelerator_kwargs`)."""

from .common import (
    LR_SCHEDULERS,
    OPTIMIZERS,
    HelpFormatter,
    accelerator_kwargs,
    add_pretrained_args,
    add_training_args,
    check_training_args,
    effective_learning_rate,
    optimizer_config,
    options_from_args,
    total_batch_size,
)
from .data import add_data_args, add_label_args, add_label_column_arg, data_config
from .demo import add_demo_args, demo_defaults, parse_demo_args
from .evaluate import build_evaluate_fid_parser, image_set_config, parse_evaluate_fid_args
from .feature_classifier import parse_feature_classifier_args
from .finetune import add_finetune_args, check_finetune_args
from .lmd import (
    MISSING_PROJECTOR,
    MODEL_OVERRIDES,
    add_generation_args,
    add_lmd_args,
    build_lmd_parser,
    check_generation_args,
    check_lmd_args,
    conditioning_dropout,
    lmd_model_kwargs,
    model_overrides,
    parse_lmd_args,
)
from .projector import (
    PROJECTOR_TYPES,
    add_projector_args,
    build_projector_parser,
    check_projector_args,
    parse_projector_args,
    projector_kwargs,
)

__all__ = [
    "HelpFormatter",
    "LR_SCHEDULERS",
    "MISSING_PROJECTOR",
    "MODEL_OVERRIDES",
    "OPTIMIZERS",
    "PROJECTOR_TYPES",
    "accelerator_kwargs",
    "add_data_args",
    "add_label_args",
    "add_label_column_arg",
    "add_demo_args",
    "add_finetune_args",
    "add_generation_args",
    "add_lmd_args",
    "add_pretrained_args",
    "add_projector_args",
    "add_training_args",
    "build_evaluate_fid_parser",
    "build_lmd_parser",
    "build_projector_parser",
    "check_finetune_args",
    "check_generation_args",
    "check_lmd_args",
    "conditioning_dropout",
    "check_projector_args",
    "check_training_args",
    "data_config",
    "lmd_model_kwargs",
    "optimizer_config",
    "options_from_args",
    "model_overrides",
    "demo_defaults",
    "effective_learning_rate",
    "image_set_config",
    "parse_demo_args",
    "parse_evaluate_fid_args",
    "parse_feature_classifier_args",
    "parse_lmd_args",
    "parse_projector_args",
    "projector_kwargs",
    "total_batch_size",
]
