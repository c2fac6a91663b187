"""The Hugging Face Hub side of a training run: the model card, the repository and its uploads.

:class:`HubUploader` creates the repository when the run starts, so a bad token or repository name fails in the
first seconds instead of after training; with ``--hub_strategy every_save`` it also uploads the current model at
every checkpoint, in the background, and at the end it uploads the output folder (never checkpoints or logs).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData, create_repo, upload_folder
from huggingface_hub.errors import HfHubHTTPError

logger = logging.getLogger(__name__)

# Never uploaded: resumable training state, tracker logs, a latent cache, the staging folder of checkpoint pushes.
HUB_STAGING_DIR = ".hub_push"
HUB_IGNORE_PATTERNS = ("checkpoint-*", ".checkpoint-*", "logs/*", "latent_cache/*", "*.tmp", f"{HUB_STAGING_DIR}/*")
HUB_STRATEGIES = ("end", "every_save")
SECRET_ARGS = ("hub_token",)


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
    license: str | None = None,
    base_model: str | Sequence[str] | None = None,
) -> str:
    """Write ``{output_dir}/README.md``: a Hub model card (``huggingface_hub.ModelCard`` with ``ModelCardData``
    metadata) with usage, metrics, images and the run's arguments.

    Args:
        title / description: the heading and a paragraph saying what the model is.
        usage: a Python snippet that loads and runs the model.
        args: the run's arguments (``hub_token`` is never written).
        metrics: final numbers, e.g. ``{"held-out PSNR (dB)": 24.1}``.
        images: ``(caption, file name relative to output_dir)`` pairs, e.g. the sample grid and curves.
        tags / pipeline_tag: Hub metadata.
        license: the weights' licence (a Hub licence id such as ``apache-2.0``); default: the run's
            ``--hub_license``, and none when that is unset too (it depends on the data, which only you know).
        base_model: the Hub id(s) the model was trained from, e.g. the pre-trained encoder of a fine-tuned one.
    """
    if license is None:
        license = (args.get if isinstance(args, Mapping) else vars(args).get)("hub_license")
    data = ModelCardData(
        license=license,
        library_name="diffusers",
        tags=["diffusers", "diffusers-lmd", *tags],
        pipeline_tag=pipeline_tag,
        base_model=base_model,
    )
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
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body) + "\n")
    path = os.path.join(output_dir, "README.md")
    card.save(path)
    return path


def create_hub_repo(repo_id: str, token: str | None = None, private: bool = False) -> str:
    """Create ``repo_id`` on the Hub if it does not exist and return its full id; a ``ValueError`` naming the flags
    when the name is invalid or the token cannot write there."""
    try:
        return create_repo(repo_id, exist_ok=True, token=token, private=private).repo_id
    except (HfHubHTTPError, ValueError) as err:
        raise ValueError(
            f"--push_to_hub: the Hub repository {repo_id!r} could not be created or opened ({err}). Check "
            "--hub_model_id and the token (`hf auth login`, or --hub_token) and its write access."
        ) from err


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


class HubUploader:
    """The Hub repository of one run: created at the start, updated at checkpoints and at the end.

    Build it with :meth:`from_args` on the main process right after parsing (it returns ``None`` without
    ``--push_to_hub`` and on the other processes).

    Args:
        output_dir: the run's output folder (uploaded at the end; checkpoint pushes are staged inside it).
        repo_id / token / private: the repository, as ``--hub_model_id``, ``--hub_token``, ``--hub_private_repo``.
        strategy: ``"end"`` uploads once, at the end; ``"every_save"`` also uploads the current model at every
            checkpoint, in the background (a checkpoint that comes while the previous upload runs is skipped).
    """

    def __init__(
        self, output_dir: str, repo_id: str, token: str | None = None, private: bool = False, strategy: str = "end"
    ):
        if strategy not in HUB_STRATEGIES:
            raise ValueError(f"--hub_strategy must be one of {HUB_STRATEGIES}, got {strategy!r}.")
        self.output_dir = output_dir
        self.token, self.private, self.strategy = token, private, strategy
        self.repo_id = create_hub_repo(repo_id, token=token, private=private)
        self.pending: Future | None = None
        logger.info("Pushing to the Hub repository %s (--hub_strategy %s)", self.repo_id, strategy)

    @classmethod
    def from_args(cls, args: argparse.Namespace, is_main_process: bool = True) -> HubUploader | None:
        """The run's uploader (creating the repository now), or ``None`` without ``--push_to_hub`` / off the main
        process."""
        if not args.push_to_hub or not is_main_process:
            return None
        strategy = args.hub_strategy
        return cls(args.output_dir, hub_repo_id(args), args.hub_token, args.hub_private_repo, strategy)

    def push_checkpoint(self, step: int, write_model: Callable[[str], object]) -> Future | None:
        """With ``every_save``: ``write_model(folder)`` into a staging folder and upload it in the background.

        Returns the upload's ``Future``, or ``None`` when nothing is pushed (``end``, or the previous upload still
        runs).
        """
        if self.strategy != "every_save":
            return None
        if self.pending is not None and not self.pending.done():
            logger.info("Step %d: the previous Hub upload is still running; this checkpoint is not pushed.", step)
            return None
        self._collect()
        staging = os.path.join(self.output_dir, HUB_STAGING_DIR)
        shutil.rmtree(staging, ignore_errors=True)
        os.makedirs(staging)
        write_model(staging)
        self.pending = upload_folder(
            repo_id=self.repo_id,
            folder_path=staging,
            commit_message=f"Training in progress, step {step}",
            ignore_patterns=list(HUB_IGNORE_PATTERNS),
            token=self.token,
            run_as_future=True,
        )
        logger.info("Step %d: uploading the current model to %s in the background", step, self.repo_id)
        return self.pending

    def _collect(self) -> None:
        """Wait for a background upload; a failed one is a warning (the final upload still follows)."""
        if self.pending is None:
            return
        try:
            self.pending.result()
        except Exception as err:  # a checkpoint push must not lose the run: report it and carry on
            logger.warning("A checkpoint upload to %s failed: %s", self.repo_id, err)
        self.pending = None

    def push_final(self, commit_message: str = "Upload model trained with diffusers-lmd") -> str:
        """Wait for any checkpoint upload, then upload the output folder; return the commit URL."""
        self._collect()
        shutil.rmtree(os.path.join(self.output_dir, HUB_STAGING_DIR), ignore_errors=True)
        url = push_to_hub(self.output_dir, self.repo_id, self.token, self.private, commit_message)
        logger.info("Pushed %s to the Hub: %s", self.output_dir, url)
        return url
