"""Atomic, pruned, resumable training checkpoints on top of ``accelerator.save_state``.

A checkpoint is written to a hidden temporary folder and renamed to ``checkpoint-{step}`` only once complete,
so a run killed while saving leaves every earlier checkpoint usable and never a half-written one that
``latest`` could pick. Old checkpoints are pruned only after the new one exists.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil

from accelerate import Accelerator

logger = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "checkpoint-"
STATE_FILE = "training_state.json"
_CHECKPOINT_RE = re.compile(rf"^{CHECKPOINT_PREFIX}(\d+)$")


def list_checkpoints(output_dir: str) -> list[tuple[int, str]]:
    """Complete checkpoints in ``output_dir`` as ``(step, path)``, oldest first."""
    if not os.path.isdir(output_dir):
        return []
    found = []
    for name in os.listdir(output_dir):
        match = _CHECKPOINT_RE.match(name)
        path = os.path.join(output_dir, name)
        if match and os.path.isfile(os.path.join(path, STATE_FILE)):
            found.append((int(match.group(1)), path))
    return sorted(found)


def prune_checkpoints(output_dir: str, total_limit: int | None) -> list[str]:
    """Delete all but the newest ``total_limit`` checkpoints; return the deleted paths."""
    if total_limit is None:
        return []
    if total_limit < 1:
        raise ValueError(f"total_limit must be at least 1, got {total_limit}.")
    stale = [path for _, path in list_checkpoints(output_dir)[:-total_limit]]
    for path in stale:
        logger.info("Removing old checkpoint %s (--checkpoints_total_limit=%d)", path, total_limit)
        shutil.rmtree(path)
    return stale


def save_checkpoint(
    accelerator: Accelerator,
    output_dir: str,
    step: int,
    total_limit: int | None = None,
    extra_state: dict | None = None,
) -> str:
    """Save the full training state as ``{output_dir}/checkpoint-{step}`` atomically; call on every rank.

    ``extra_state`` (JSON-serialisable) is stored beside the step in ``training_state.json``.
    """
    final = os.path.join(output_dir, f"{CHECKPOINT_PREFIX}{step}")
    tmp = os.path.join(output_dir, f".{CHECKPOINT_PREFIX}{step}.tmp")
    if accelerator.is_main_process:
        os.makedirs(output_dir, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)  # leftovers of a run killed while saving
    accelerator.wait_for_everyone()
    accelerator.save_state(tmp)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        with open(os.path.join(tmp, STATE_FILE), "w") as f:
            json.dump({"global_step": step, **(extra_state or {})}, f, indent=2)
        _replace_dir(tmp, final)
        prune_checkpoints(output_dir, total_limit)
        logger.info("Saved checkpoint %s", final)
    accelerator.wait_for_everyone()
    return final


def _replace_dir(src: str, dst: str) -> None:
    """Rename ``src`` to ``dst``; an existing ``dst`` is moved aside first and removed after."""
    old = None
    if os.path.exists(dst):
        old = dst + ".old"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dst, old)
    os.replace(src, dst)
    if old is not None:
        shutil.rmtree(old)


def resolve_resume_path(output_dir: str, resume_from_checkpoint: str | None) -> str | None:
    """The checkpoint folder to resume from: ``None``, ``"latest"`` (``None`` if there is none yet), or a path.

    A bare checkpoint name (``checkpoint-500``) is looked up inside ``output_dir``.
    """
    if resume_from_checkpoint is None:
        return None
    if resume_from_checkpoint == "latest":
        checkpoints = list_checkpoints(output_dir)
        if not checkpoints:
            logger.warning("--resume_from_checkpoint latest: no checkpoint in %s yet, starting a new run.", output_dir)
            return None
        return checkpoints[-1][1]
    for candidate in (resume_from_checkpoint, os.path.join(output_dir, resume_from_checkpoint)):
        if os.path.isdir(candidate):
            if not os.path.isfile(os.path.join(candidate, STATE_FILE)):
                raise ValueError(
                    f"{candidate} is not a complete checkpoint (no {STATE_FILE}): it may be from an interrupted save. "
                    'Pick another checkpoint or pass "latest".'
                )
            return candidate
    raise ValueError(
        f"--resume_from_checkpoint {resume_from_checkpoint!r} is neither a checkpoint folder nor one inside "
        f'{output_dir}; pass an existing checkpoint path or "latest".'
    )


def read_training_state(checkpoint: str) -> dict:
    """The ``training_state.json`` of a checkpoint (at least ``global_step``)."""
    with open(os.path.join(checkpoint, STATE_FILE)) as f:
        return json.load(f)


def load_checkpoint(accelerator: Accelerator, checkpoint: str) -> dict:
    """Restore model, optimiser, LR scheduler, RNG and registered state; return the stored training state."""
    accelerator.load_state(checkpoint)
    return read_training_state(checkpoint)
