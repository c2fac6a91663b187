"""Helpers the test modules share (as diffusers keeps its ``testing_utils``): script runners, tiny training runs, a
hand-built Hub cache and fake Fashion-MNIST files. Fixtures live in ``conftest.py``."""

from __future__ import annotations

import argparse
import gzip
import hashlib
import importlib.util
import json
import os
import struct
import subprocess
import sys
import textwrap
from concurrent.futures import Future
from pathlib import Path

import numpy as np
import torch
import transformers
from conftest import tiny_clip
from huggingface_hub.utils import filter_repo_objects
from safetensors.torch import load_file
from transformers import Dinov2Config, Dinov2Model
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from diffusers_lmd import LMDModel
from diffusers_lmd.pipelines import LMDPipeline
from diffusers_lmd.training import hub, train_lmd
from diffusers_lmd.training.args import parse_lmd_args
from diffusers_lmd.training.logging import read_jsonl

ROOT = Path(__file__).resolve().parents[1]


def run_and_resume(script: str, flags: list[str]) -> subprocess.CompletedProcess:
    """Run ``training/<script>.py`` for one step, then to two steps resuming from its latest checkpoint, both as
    ``__main__`` in one fresh interpreter (one import of torch instead of two), capturing its real console."""
    path = str(ROOT / "training" / f"{script}.py")
    runs = [
        [*flags, "--max_train_steps", "1"],
        [*flags, "--max_train_steps", "2", "--resume_from_checkpoint", "latest"],
    ]
    driver = textwrap.dedent(f"""
        import runpy, sys
        for argv in {runs!r}:
            sys.argv = [{path!r}, *argv]
            runpy.run_path({path!r}, run_name="__main__")
    """)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    run = subprocess.run([sys.executable, "-c", driver], capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    return run


def tiny_argv(projector: str, output_dir, cache_dir, *extra) -> list[str]:
    """A 16 px, tiny-preset run on a few demo crops: about a second of CPU per run."""
    return [
        "--projector_path", projector, "--output_dir", str(output_dir), "--latent_cache_dir", str(cache_dir),
        "--resolution", "16", "--preset", "tiny", "--train_batch_size", "8", "--learning_rate", "1e-3",
        "--demo_crops_per_photo", "8", "--demo_eval_crops", "3", "--report_to", "none",
        "--validation_steps", "1000", *map(str, extra),
    ]  # fmt: skip


def train(projector, tmp_path, *extra, name="out"):
    args = parse_lmd_args(tiny_argv(projector, tmp_path / name, tmp_path / "cache", *extra))
    return train_lmd(args), args


def step_records(output_dir):
    return [r for r in read_jsonl(os.path.join(output_dir, "train_log.jsonl")) if "loss" in r]


# train_projector.py's flags for a 16 px projector trained in a few seconds
TINY_PROJECTOR_FLAGS = [
    "--resolution", "16", "--block_out_channels", "8", "16", "--norm_num_groups", "8", "--latent_channels", "4",
    "--num_vq_embeddings", "32", "--disc_channels", "8", "--disc_layers", "2", "--train_batch_size", "4",
    "--demo_crops_per_photo", "2", "--demo_eval_crops", "2", "--report_to", "none", "--stats_max_batches", "1",
]  # fmt: skip


def load_script(name: str):
    """``training/<name>.py`` as a module (its ``main`` / ``parse_args`` callable in this process)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "training" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def hub_repo(cache: Path, repo_id: str, revision: str = "main") -> Path:
    """The snapshot folder of ``repo_id`` at ``revision`` in a Hub cache, with ``refs/{revision}`` pointing at it."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = hashlib.sha1(f"{repo_id}@{revision}".encode()).hexdigest()
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / revision).write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    return snapshot


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def write_idx(path, array: np.ndarray, magic: int | None = None, gz: bool = True, cut: int = 0) -> str:
    """An IDX file of ``array`` (uint8); ``magic`` overrides the header's, ``cut`` drops trailing bytes."""
    magic = magic if magic is not None else (2051 if array.ndim == 3 else 2049)
    raw = struct.pack(">i", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()
    raw = raw[: len(raw) - cut] if cut else raw
    with (gzip.open if gz else open)(path, "wb") as f:
        f.write(raw)
    return str(path)


def fake_fashion_mnist(folder, num_train=12, num_test=5, seed=0, balanced=False) -> str:
    """The four IDX files, with random images and labels (``balanced``: labels cycling 0-9), as Debian names them."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split, count in (("train", num_train), ("t10k", num_test)):
        write_idx(folder / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 256, (count, 28, 28)))
        labels = np.arange(count) % 10 if balanced else rng.integers(0, 10, count)
        write_idx(folder / f"{split}-labels-idx1-ubyte.gz", labels)
    return str(folder)


class FakeHub:
    """Records ``create_repo`` and ``upload_folder`` calls in place of the Hub: the files ``upload_folder`` would send,
    and a model folder's config or a pipeline folder's transformer weights; ``watch``: record what that folder held
    when the repository was created."""

    def __init__(self, monkeypatch, fail_create: Exception | None = None, watch: Path | None = None):
        self.created, self.uploads, self.fail_create, self.watch = [], [], fail_create, watch
        monkeypatch.setattr(hub, "create_repo", self.create_repo)
        monkeypatch.setattr(hub, "upload_folder", self.upload_folder)

    def create_repo(self, repo_id, exist_ok, token, private):
        self.created.append(dict(repo_id=repo_id, token=token, private=private))
        if self.watch is not None:  # what the run had written when the repository was created
            self.created[-1]["existing"] = sorted(p.name for p in self.watch.iterdir()) if self.watch.exists() else []
        if self.fail_create is not None:
            raise self.fail_create
        return argparse.Namespace(repo_id=f"someone/{repo_id.split('/')[-1]}")

    def upload_folder(self, repo_id, folder_path, commit_message, ignore_patterns, token, run_as_future=False):
        root = Path(folder_path)
        files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
        sent = set(filter_repo_objects(files, ignore_patterns=ignore_patterns))
        upload = dict(folder=root, files=sent, message=commit_message, background=run_as_future)
        if (root / "config.json").is_file():  # a model folder: its config
            upload["config"] = json.loads((root / "config.json").read_text())
        if (root / "transformer").is_dir():  # a pipeline folder: the transformer weights it would send
            upload["weights"] = load_file(root / "transformer" / "diffusion_pytorch_model.safetensors")
        self.uploads.append(upload)
        if run_as_future:
            done = Future()
            done.set_result("https://huggingface.co/someone/x/commit/1")
            return done
        return "https://huggingface.co/someone/x/commit/2"


# ------------------------------------------------------------------------------------------- pipelines
def gen(seed: int = 0) -> torch.Generator:
    """A CPU generator seeded with ``seed``."""
    return torch.Generator().manual_seed(seed)


def make_generation_pipeline(components, text: bool = False, id2label=None, **config) -> LMDPipeline:
    """A tiny pipeline whose transformer has ``config`` (and the tiny CLIP when ``text``)."""
    torch.manual_seed(1)
    if text:
        config["cross_attention_dim"] = 16
    transformer = LMDModel.from_preset("tiny", sample_size=8, in_channels=4, patch_size=2, **config).eval()
    if config.get("head_type") == "diffusion":  # a head that does something (its output starts at zero)
        torch.nn.init.normal_(transformer.diffusion_head.proj_out.weight, std=0.05)
    extra = dict(zip(("tokenizer", "text_encoder"), tiny_clip())) if text else {}
    pipe = LMDPipeline(**{**components, "transformer": transformer}, **extra, id2label=id2label)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def latents_of(pipe, **kwargs) -> torch.Tensor:
    """The pipeline's output latents (no decoding)."""
    return pipe(output_type="latent", **kwargs).images


# What a model card's reader runs on a loaded pipeline: a reconstruction and two generated images.
SAMPLE = textwrap.dedent(
    """
    import numpy as np
    import torch

    def sample(pipe):
        pipe.set_progress_bar_config(disable=True)
        image = torch.linspace(0, 1, 3 * 16 * 16).reshape(1, 3, 16, 16)
        recon = pipe(image=image, generator=torch.Generator().manual_seed(0), output_type="np").images
        generated = pipe(batch_size=2, num_inference_steps=3, generator=torch.Generator().manual_seed(1),
                         output_type="np").images
        return np.concatenate([recon, generated])
    """
)


def sample(pipe) -> np.ndarray:
    """:data:`SAMPLE` run on ``pipe`` in this process."""
    namespace: dict = {}
    exec(SAMPLE, namespace)
    return namespace["sample"](pipe)


# ------------------------------------------------------------------------------ feature networks (FID / KID)
# A tiny random ViT: a few KB of weights.
TINY_VIT = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, patch_size=4)


def image_processor_class(name: str):
    """The PIL image processor (transformers >= 5 without torchvision), else the classic one (transformers 4)."""
    return getattr(transformers, f"{name}Pil", None) or getattr(transformers, name)


def tiny_dinov2_folder(path: Path, side: int = 16, with_processor: bool = True) -> str:
    """A random 1-block DINOv2 (16-D features, a few KB) saved with ``save_pretrained``, with an image processor that
    crops ``side`` px and normalises with ImageNet's mean and std, as facebook/dinov2-* do."""
    torch.manual_seed(0)
    Dinov2Model(Dinov2Config(image_size=side, **TINY_VIT)).save_pretrained(path)
    if with_processor:
        image_processor_class("BitImageProcessor")(
            size={"shortest_edge": side},
            crop_size={"height": side, "width": side},
            image_mean=IMAGENET_DEFAULT_MEAN,
            image_std=IMAGENET_DEFAULT_STD,
        ).save_pretrained(path)
    return str(path)
