"""Quiet ``datasets`` while the library builds tables behind the scenes."""

from __future__ import annotations

import contextlib

import datasets


@contextlib.contextmanager
def quiet_datasets():
    """Hide ``datasets``' progress bars inside the block (table building, cache writes): the training bar is the
    one to watch."""
    was_enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was_enabled:
            datasets.enable_progress_bars()
