"""The classifier to fine-tune, from what LMD training leaves behind, locally or on the Hub.

``pretrained_path`` may be an ``LMDPipeline`` folder or repository (``model_index.json``, ``transformer/`` and
``vae/``: what ``train_lmd.py`` saves and pushes), an ``LMDModel`` one (latents only unless a projector is given) or
an ``LMDForImageClassification`` to continue from. Weights are read as safetensors only.
"""

from __future__ import annotations

import os

from ..models import LMDModel
from ..models.lmd_classifier import LMDForImageClassification
from ..training.pretrained import (
    PretrainedSource,
    load_pretrained_config,
    load_pretrained_lmd,
    load_pretrained_model,
    load_pretrained_projector,
    resolve_pretrained,
)


def load_classifier_for_finetuning(
    pretrained_path: str | os.PathLike,
    label_names: list[str],
    *,
    projector_path: str | os.PathLike | None = None,
    pooling: str = "mean",
    classifier_dropout: float = 0.0,
    revision: str | None = None,
    variant: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    token: str | bool | None = None,
) -> LMDForImageClassification:
    """A classifier for ``label_names``: a saved classifier as it is, or an LMD encoder with a new head.

    ``revision`` / ``variant`` / ``cache_dir`` / ``token`` apply to ``pretrained_path``; ``projector_path`` (a
    projector folder or repository, or a pipeline whose autoencoder is used) is read at its default revision and
    replaces a pipeline's own ``vae/``.
    """
    source = resolve_pretrained(
        pretrained_path, revision=revision, variant=variant, cache_dir=cache_dir, token=token, flag="--pretrained_path"
    )
    class_name = None if source.is_pipeline else load_pretrained_config(source).get("_class_name")
    if class_name == LMDForImageClassification.__name__:
        return _reloaded_classifier(source, label_names, projector_path)
    if not source.is_pipeline and class_name != LMDModel.__name__:
        raise ValueError(
            f"--pretrained_path {source} holds a {class_name!r}; expected an LMDPipeline, an LMDModel or an "
            "LMDForImageClassification (the output of training/train_lmd.py or of this script)."
        )
    model, projector = load_pretrained_lmd(source, "--pretrained_path", with_projector=projector_path is None)
    if projector_path is not None:
        projector_source = resolve_pretrained(projector_path, cache_dir=cache_dir, token=token, flag="--projector_path")
        projector = load_pretrained_projector(projector_source, subfolder_flag=None)
    head = dict(pooling=pooling, classifier_dropout=classifier_dropout, label_names=label_names)
    return LMDForImageClassification.from_lmd_model(model, len(label_names), projector=projector, **head)


def _reloaded_classifier(
    source: PretrainedSource, label_names: list[str], projector_path: str | os.PathLike | None
) -> LMDForImageClassification:
    if projector_path is not None:
        raise ValueError("--projector_path is for LMD pipelines and models; a classifier embeds its projector.")
    model = load_pretrained_model(LMDForImageClassification, source)
    if model.config.num_labels != len(label_names):
        raise ValueError(
            f"--pretrained_path {source} classifies {model.config.num_labels} classes but the dataset has "
            f"{len(label_names)}: start from the LMD pre-training output to get a new head."
        )
    return model
