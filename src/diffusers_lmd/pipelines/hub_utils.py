"""Sharing an LMD pipeline: the Hub pipeline file, ``model_index.json``'s class name and the model card.

diffusers loads a custom pipeline from a folder or repository whose ``model_index.json`` names a file beside it:
``"_class_name": ["lmd_pipeline", "LMDPipeline"]`` with ``lmd_pipeline.py`` (package data, under ``hub_files/``)
makes ``DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)`` work. :class:`LMDHubMixin` gives the
LMD pipelines a ``save_pretrained`` / ``push_to_hub`` that write both and a model card, and reads the pair back as
its own class name, so ``LMDPipeline.from_pretrained`` loads such a folder without running the file.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from importlib import resources
from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData, create_repo, file_exists, upload_folder

logger = logging.getLogger(__name__)

HUB_PIPELINE_FILE = "lmd_pipeline.py"
HUB_PIPELINE_CLASS = [Path(HUB_PIPELINE_FILE).stem, "LMDPipeline"]  # model_index.json's _class_name
CARD_TAGS = ["lmd", "masked-autoencoder", "latent-masking-diffusion"]
INSTALL = """\
# diffusers-lmd is on no package index: install it from a clone of its repository,
#   pip install .
# or from a wheel built there: pip wheel --no-deps -w dist . && pip install dist/diffusers_lmd-*.whl
"""
_HUB_ARGS = ("commit_message", "private", "create_pr", "token", "repo_id")  # save_pretrained(push_to_hub=True, ...)


def hub_pipeline_file() -> Path:
    """The ``lmd_pipeline.py`` shipped in the package (for ``custom_pipeline=``), installed from a wheel or not."""
    return Path(str(resources.files(__package__).joinpath("hub_files", HUB_PIPELINE_FILE)))


def copy_hub_pipeline_file(folder: str | os.PathLike) -> bool:
    """Copy the Hub pipeline file into ``folder``; ``False`` (with a warning) when the package lacks it."""
    source = hub_pipeline_file()
    if not source.is_file():
        logger.warning(
            "The package's %s is missing; the saved folder loads with diffusers_lmd only (no custom_pipeline=).",
            HUB_PIPELINE_FILE,
        )
        return False
    shutil.copyfile(source, os.path.join(folder, HUB_PIPELINE_FILE))
    return True


def card_pipeline_tag(class_conditional: bool, text_conditional: bool, sampling_head: bool) -> str:
    """The Hub task of an LMD model: ``text-to-image`` with text conditioning, else ``unconditional-image-generation``
    (the Hub's task for generation without a prompt, which diffusers' class-conditional ImageNet cards use too) when
    it has classes or samples with a sampling head (diffusion or categorical); an unconditional model with the MSE
    head predicts means, so it is a reconstruction (``image-to-image``) model."""
    if text_conditional:
        return "text-to-image"
    if class_conditional or sampling_head:
        return "unconditional-image-generation"
    return "image-to-image"


def card_tags(class_conditional: bool) -> list[str]:
    """The model card's tags beside diffusers': LMD's, the tasks it serves, and its conditioning."""
    return [*CARD_TAGS, "image-reconstruction", *(["class-conditional"] if class_conditional else [])]


def pipeline_usage(repo: str, class_conditional: bool = False, text_conditional: bool = False) -> str:
    """The model card's snippet: install, load with diffusers alone (any folder, older ones too), run."""
    usage = f"""{INSTALL}
from diffusers import DiffusionPipeline

pipe = DiffusionPipeline.from_pretrained("{repo}", custom_pipeline="lmd_pipeline", trust_remote_code=True)
# or: from diffusers_lmd import LMDPipeline; pipe = LMDPipeline.from_pretrained("{repo}")
reconstruction = pipe(image=image, mask_ratio=0.75).images[0]
"""
    if class_conditional:
        usage += "samples = pipe(class_labels=0, num_images_per_prompt=4, guidance_scale=3.0, num_inference_steps=16)\n"
    if text_conditional:
        usage += 'samples = pipe(prompt=["a caption"], guidance_scale=3.0, num_inference_steps=16).images\n'
    return usage


def write_pipeline_card(folder: str | os.PathLike, pipeline, repo_id: str | None = None) -> str:
    """A short model card for ``folder`` (``README.md``): what the model is, how to install and load it."""
    config = pipeline.transformer.config
    repo = repo_id or Path(os.path.abspath(folder)).name
    classes, text = config.num_class_embeds is not None, config.cross_attention_dim is not None
    data = ModelCardData(
        library_name="diffusers",
        tags=["diffusers", "diffusers-lmd", *card_tags(classes)],
        pipeline_tag=card_pipeline_tag(classes, text, config.head_type != "mse"),
    )
    conditioning = " and ".join(name for name, given in (("class", classes), ("text", text)) if given) or "none"
    description = (
        "An LMD (Latent Masking Diffusion, arXiv 2312.07971) pipeline saved with diffusers-lmd: a ViT masked "
        f"autoencoder over the latents of a frozen projector; conditioning: {conditioning}; head: "
        f"{config.head_type}. It reconstructs and inpaints images and generates by progressive unmasking."
    )
    usage = pipeline_usage(repo, classes, text)
    body = [f"# LMD: {repo}", "", description, "", "## Usage", "", "```python", usage.strip(), "```", ""]
    path = os.path.join(folder, "README.md")
    ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body)).save(path)
    return path


class LMDHubMixin:
    """``save_pretrained`` and ``push_to_hub`` for the LMD pipelines that carry the Hub pipeline file and a model
    card, and the class-name pair of ``model_index.json`` read back as the LMD class's own."""

    def save_pretrained(self, save_directory: str | os.PathLike, *args, push_to_hub: bool = False, **kwargs) -> None:
        """diffusers' ``save_pretrained``, plus ``lmd_pipeline.py`` (named in ``model_index.json``, so
        ``DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)`` loads it) and a model card
        ``README.md`` unless the folder has one; ``push_to_hub=True`` uploads all of it (as :meth:`push_to_hub`)."""
        hub_kwargs = {name: kwargs.pop(name) for name in _HUB_ARGS if name in kwargs}
        super().save_pretrained(save_directory, *args, **kwargs)
        repo_id = hub_kwargs.pop("repo_id", None)
        if copy_hub_pipeline_file(save_directory):
            index_path = os.path.join(save_directory, "model_index.json")
            index = json.loads(Path(index_path).read_text())
            Path(index_path).write_text(
                json.dumps({**index, "_class_name": HUB_PIPELINE_CLASS}, indent=2, sort_keys=True) + "\n"
            )
        if not os.path.exists(os.path.join(save_directory, "README.md")):
            write_pipeline_card(save_directory, self, repo_id)
        if push_to_hub:
            self._upload(save_directory, repo_id or Path(os.path.abspath(save_directory)).name, **hub_kwargs)

    def push_to_hub(
        self,
        repo_id: str,
        commit_message: str | None = None,
        private: bool | None = None,
        token: str | None = None,
        create_pr: bool = False,
        safe_serialization: bool = True,
        variant: str | None = None,
        subfolder: str | None = None,
    ):
        """Save into a temporary folder (:meth:`save_pretrained`: the pipeline file and card with it) and upload it;
        a model card the repository already has is kept, as diffusers keeps it."""
        with tempfile.TemporaryDirectory() as folder:
            self.save_pretrained(folder, safe_serialization=safe_serialization, variant=variant, repo_id=repo_id)
            return self._upload(folder, repo_id, commit_message, private, token, create_pr, subfolder)

    @staticmethod
    def _upload(folder, repo_id, commit_message=None, private=None, token=None, create_pr=False, subfolder=None):
        repo_id = create_repo(repo_id, private=private, token=token, exist_ok=True).repo_id
        keep_card = not subfolder and file_exists(repo_id, "README.md", token=token)
        return upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            path_in_repo=subfolder,
            commit_message=commit_message or "Upload LMDPipeline",
            token=token,
            create_pr=create_pr,
            ignore_patterns=["README.md"] if keep_card else None,
        )

    @classmethod
    def _dict_from_json_file(cls, json_file: str | os.PathLike) -> dict:
        """The config, with ``model_index.json``'s ``[file, class]`` pair read as the class name: the file is for
        ``DiffusionPipeline``, while an LMD class loads itself (and a folder saved before the pair, too)."""
        config = super()._dict_from_json_file(json_file)
        if isinstance(config.get("_class_name"), list):
            config["_class_name"] = config["_class_name"][1]
        return config
