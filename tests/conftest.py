"""Shared pytest fixtures. Add fixtures with small targeted edits; each section says who uses it."""

from __future__ import annotations

import sys

import huggingface_hub
import pytest
import torch
from diffusers import AutoencoderKL, VQModel

from diffusers_lmd import LMDMaskScheduler, LMDModel

# ----------------------------------------------------------------------------- pipelines (tests/pipelines/)
TINY_PROJECTOR = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
    up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
    block_out_channels=(8, 16),
    layers_per_block=1,
    latent_channels=4,
    norm_num_groups=4,
    sample_size=16,
)


def tiny_pipeline_components(projector: str = "vq", seed: int = 0) -> dict:
    """Random tiny components: a 2x-downsampling projector with 4 latent channels and an 8x8-latent LMDModel.

    The model's resolution is 16 px; one token (2x2 latent patch) covers 4x4 pixels, 16 tokens per image.
    """
    torch.manual_seed(seed)
    if projector == "vq":
        vae = VQModel(**TINY_PROJECTOR, num_vq_embeddings=16, vq_embed_dim=4)
    else:
        vae = AutoencoderKL(**TINY_PROJECTOR)
    transformer = LMDModel.from_preset("tiny", sample_size=8, in_channels=4, patch_size=2)
    return {"vae": vae.eval(), "transformer": transformer.eval(), "scheduler": LMDMaskScheduler()}


@pytest.fixture
def make_pipeline_components():
    """Factory: ``make_pipeline_components(projector="vq" | "kl", seed=0)`` -> dict of random tiny components."""
    return tiny_pipeline_components


@pytest.fixture
def make_pipeline():
    """Factory: ``make_pipeline(cls=LMDPipeline, projector="vq" | "kl", seed=0)`` with progress bars off."""

    def make(cls=None, projector: str = "vq", seed: int = 0):
        from diffusers_lmd import LMDPipeline

        pipe = (cls or LMDPipeline)(**tiny_pipeline_components(projector, seed))
        pipe.set_progress_bar_config(disable=True)
        return pipe

    return make


# ------------------------------------------------------------ LMD training (tests/training/)
@pytest.fixture(scope="session")
def tiny_projector_path(tmp_path_factory) -> str:
    """A saved random tiny ``VQModel`` (2x downsampling, 4 latent channels) for training runs at 16 px."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("projector") / "vq"
    VQModel(**TINY_PROJECTOR, num_vq_embeddings=16, vq_embed_dim=4).save_pretrained(path)
    return str(path)


@pytest.fixture
def one_thread():
    """Tiny models train fastest on one thread, and then do not fight the other tests for the two cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def fresh_accelerate_state():
    """Accelerate keeps one global state per process; runs with other settings (precision) need it cleared."""
    from accelerate.state import AcceleratorState, GradientState

    def reset():
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()

    reset()
    yield
    reset()


# --------------------------------------------------------------- Fashion-MNIST (tests that need the real data)
@pytest.fixture(scope="session")
def fashion_mnist_dir() -> str:
    """The folder with the real Fashion-MNIST IDX files (`make data`); missing data fails under CI=true."""
    import os

    from diffusers_lmd.data.fashion_mnist import find_local_data_dir, missing_data_message

    found = find_local_data_dir()
    if found is None:
        message = missing_data_message("needed by this test")
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found


# ------------------------------------------- labelled images (tests/training/)
@pytest.fixture
def make_image_folder():
    """Factory: ``make_image_folder(root, per_class=6)`` writes 16x16 PNGs of two colours (``red/``, ``blue/``), a
    labelled ``imagefolder`` for the classifier script, and returns the folder as a string."""
    import numpy as np
    from PIL import Image

    def make(root, per_class: int = 6) -> str:
        rng = np.random.default_rng(0)
        for label, colour in (("red", (200, 30, 30)), ("blue", (30, 30, 200))):
            (root / label).mkdir(parents=True)
            for i in range(per_class):
                pixels = (np.array(colour) + rng.integers(0, 40, (16, 16, 3))).clip(0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(root / label / f"{i}.png")
        return str(root)

    return make


@pytest.fixture(autouse=True)
def restore_verbosity():
    """Runs that call ``diffusers_lmd.training.logging.setup_logging`` change process-wide log levels: put them back
    (every test: each LMD, projector and classifier training run calls it)."""
    import logging

    import datasets
    import diffusers
    import transformers

    package = logging.getLogger("diffusers_lmd")
    libraries = (diffusers, transformers, datasets)
    saved = package.level, [library.utils.logging.get_verbosity() for library in libraries]
    yield
    package.setLevel(saved[0])
    for library, level in zip(libraries, saved[1]):
        library.utils.logging.set_verbosity(level)


# -------------------------- text conditioning (tests/pipelines/, tests/training/)
TINY_TEXT_MAX_LENGTH = 12


def tiny_clip(seed: int = 0, hidden_size: int = 16):
    """A random tiny ``CLIPTokenizer`` (one token per letter, no merges) and ``CLIPTextModel``, built offline."""
    import json
    import tempfile

    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for letter in "abcdefghijklmnopqrstuvwxyz":
        vocab[letter] = len(vocab)
        vocab[letter + "</w>"] = len(vocab)
    with tempfile.TemporaryDirectory() as folder:
        with open(f"{folder}/vocab.json", "w") as f:
            json.dump(vocab, f)
        with open(f"{folder}/merges.txt", "w") as f:
            f.write("#version: 0.2\n")
        tokenizer = CLIPTokenizer(f"{folder}/vocab.json", f"{folder}/merges.txt", model_max_length=TINY_TEXT_MAX_LENGTH)
    config = CLIPTextConfig(
        vocab_size=len(vocab),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=TINY_TEXT_MAX_LENGTH,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    torch.manual_seed(seed)
    return tokenizer, CLIPTextModel(config).eval()


@pytest.fixture(scope="session")
def tiny_text_encoder_path(tmp_path_factory) -> str:
    """A saved tiny CLIP tokenizer and text model in a pipeline's layout (``tokenizer/``, ``text_encoder/``)."""
    tokenizer, text_encoder = tiny_clip()
    path = tmp_path_factory.mktemp("clip")
    tokenizer.save_pretrained(path / "tokenizer")
    text_encoder.save_pretrained(path / "text_encoder")
    return str(path)


# ------------------------------------------------------- environment (matplotlib missing, the Hub offline)
@pytest.fixture
def no_matplotlib(monkeypatch):
    """Make ``import matplotlib`` fail as it does where the package was installed without the [train] extra."""
    for name in [n for n in sys.modules if n == "matplotlib" or n.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)


@pytest.fixture
def offline(monkeypatch):
    """Hub offline mode: every request fails before a socket opens; files come from the cache only."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
