"""Evaluating on the EMA weights, as diffusers' example scripts do: store the trained weights, copy the EMA ones
in, run, restore."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator

import torch
from diffusers.training_utils import EMAModel


@contextlib.contextmanager
def ema_weights(ema: EMAModel | None, model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Inside the block ``model`` holds the EMA weights (``store`` / ``copy_to``); afterwards its trained weights
    are back (``restore``), also when the block raises. With ``ema=None`` the model is left as it is."""
    if ema is None:
        yield model
        return
    ema.store(model.parameters())
    ema.copy_to(model.parameters())
    try:
        yield model
    finally:
        ema.restore(model.parameters())


def copy_with_ema_weights(model: torch.nn.Module, ema: EMAModel | None) -> torch.nn.Module:
    """A copy of ``model`` holding the EMA weights (or its own without EMA), e.g. to save mid-run without touching
    the model being trained."""
    snapshot = copy.deepcopy(model)
    if ema is not None:
        ema.copy_to(snapshot.parameters())
    return snapshot
