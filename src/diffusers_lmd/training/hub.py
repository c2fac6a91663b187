"""The model card every training script writes, and the upload of the output folder to the Hugging Face Hub."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path

from huggingface_hub import ModelCard, create_repo, upload_folder

# Never uploaded: resumable training state, tracker logs, a latent cache.
HUB_IGNORE_PATTERNS = ("checkpoint-*", ".checkpoint-*", "logs/*", "latent_cache/*", "*.tmp")
SECRET_ARGS = ("hub_token",)
HUB_PIPELINE_FILE = "lmd_pipeline.py"


def hub_pipeline_file() -> Path:
    """The ``lmd_pipeline.py`` shipped in the package (for ``custom_pipeline=``), installed from a wheel or not."""
    resource = resources.files("diffusers_lmd.training").joinpath("hub_files", HUB_PIPELINE_FILE)
    return Path(str(resource))


def hub_repo_id(args: argparse.Namespace) -> str:
    """``--hub_model_id``, or the name of ``--output_dir`` (as in diffusers' example scripts)."""
    return args.hub_model_id or Path(os.path.abspath(args.output_dir)).name


def _format_value(value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return f"`{value}`" if value is not None else "—"


def public_args(args: argparse.Namespace | Mapping) -> dict:
    """The run's arguments without secrets, for cards and logs."""
    items = vars(args) if isinstance(args, argparse.Namespace) else dict(args)
    return {k: v for k, v in sorted(items.items()) if k not in SECRET_ARGS}


def save_model_card(
    output_dir: str,
    *,
    title: str,
    description: str,
    usage: str,
    args: argparse.Namespace | Mapping,
    metrics: Mapping[str, float] | None = None,
    images: Sequence[tuple[str, str]] = (),
    tags: Sequence[str] = (),
    pipeline_tag: str | None = None,
) -> str:
    """Write ``{output_dir}/README.md``: a Hub model card with metadata, usage, metrics, images and arguments.

    Args:
        title / description: the heading and a paragraph saying what the model is.
        usage: a Python snippet that loads and runs the model.
        args: the run's arguments (``hub_token`` is never written).
        metrics: final numbers, e.g. ``{"held-out PSNR (dB)": 24.1}``.
        images: ``(caption, file name relative to output_dir)`` pairs, e.g. the sample grid and curves.
        tags / pipeline_tag: Hub metadata.
    """
    front = ["---", "library_name: diffusers", "license: apache-2.0", "tags:"]
    front += [f"- {tag}" for tag in ("diffusers", "diffusers-lmd", *tags)]
    if pipeline_tag:
        front.append(f"pipeline_tag: {pipeline_tag}")
    front.append("---")
    body = [f"# {title}", "", description, "", "## Usage", "", "```python", usage.strip(), "```", ""]
    if metrics:
        body += ["## Metrics", "", "| metric | value |", "|---|---|"]
        body += [f"| {name} | {_format_value(value)} |" for name, value in metrics.items()]
        body.append("")
    for caption, file_name in images:
        if os.path.exists(os.path.join(output_dir, file_name)):
            body += [f"## {caption}", "", f"![{caption}]({file_name})", ""]
    body += ["## Training arguments", "", "| argument | value |", "|---|---|"]
    body += [f"| `{name}` | {_format_value(value)} |" for name, value in public_args(args).items()]
    card = ModelCard("\n".join(front + [""] + body) + "\n")
    path = os.path.join(output_dir, "README.md")
    card.save(path)
    return path


def push_to_hub(
    folder: str,
    repo_id: str,
    token: str | None = None,
    private: bool = False,
    commit_message: str = "Upload model trained with diffusers-lmd",
) -> str:
    """Create ``repo_id`` if needed and upload ``folder`` (without checkpoints and logs); return the commit URL."""
    repo_id = create_repo(repo_id, exist_ok=True, token=token, private=private).repo_id
    commit = upload_folder(
        repo_id=repo_id,
        folder_path=folder,
        commit_message=commit_message,
        ignore_patterns=list(HUB_IGNORE_PATTERNS),
        token=token,
    )
    return str(commit)
