"""What every ``benchmarks/bench_*.py`` script does the same way: its parser's start and where its results go."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Iterable

import torch

# The checkout's root: the scripts find training/ and the committed assets/ there and record its commit.
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def bench_parser(
    description: str | None, presets: Iterable[str], default: str, preset_help: str | None = None
) -> argparse.ArgumentParser:
    """A benchmark script's parser (its docstring as description, kept as written) with ``--preset`` and the
    required JSON ``--output`` its other flags follow."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(presets), default=default, help=preset_help)
    parser.add_argument("--output", required=True, help="Where to write the JSON result.")
    return parser


def default_device() -> str:
    """``--device``'s default: the GPU when there is one."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def write_json(result: dict, path: str) -> None:
    """Write ``result`` to ``path`` as indented JSON, creating its folder."""
    make_parent(path)
    with open(path, "w") as f:
        json.dump(result, f, indent=1)


def write_markdown(tables: str, path: str | None) -> None:
    """Write the printed tables to ``path`` (``--markdown``) when one is given."""
    if path:
        with open(path, "w") as f:
            f.write(tables + "\n")


def make_parent(path: str) -> None:
    """Create the folder a file is about to be written in."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
