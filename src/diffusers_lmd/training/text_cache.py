"""Text embeddings of a text-conditional LMD run: the frozen text encoder's output for each distinct caption.

The text encoder is frozen, so a caption's embeddings never change: with ``--cache_latents`` they are computed
once per *distinct* caption (plus the empty prompt, the null condition of caption dropout) into a ``datasets``
table beside the latent cache, under ``{cache_dir}/text-{fingerprint}``; the fingerprint hashes the text
encoder's weights and config, the tokenizer and the captions. A dataset whose captions repeat (class names,
templates) pays a few rows; one caption per image pays one row per image, still encoded once rather than every
epoch. With ``--no-cache_latents`` every batch's captions are encoded on the fly instead.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterable, Sequence

import datasets
import torch

from ..data.quiet import quiet_datasets
from ..pipelines.text_inputs import NULL_PROMPT, encode_text

logger = logging.getLogger(__name__)

TEXT_CACHE_VERSION = 1
META_FILE = "lmd_text_cache.json"


def text_encoder_fingerprint(tokenizer, text_encoder: torch.nn.Module) -> str:
    """SHA-256 of the tokenizer (vocabulary, merges, length) and of the text encoder's config and every weight."""
    digest = hashlib.sha256()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:  # without the padding / truncation state that each call of the tokenizer sets
        vocab = json.dumps({**json.loads(backend.to_str()), "padding": None, "truncation": None}, sort_keys=True)
    else:
        vocab = json.dumps(tokenizer.get_vocab(), sort_keys=True)
    digest.update(f"{type(tokenizer).__name__}:{tokenizer.model_max_length}:{vocab}".encode())
    digest.update(json.dumps(text_encoder.config.to_dict(), sort_keys=True, default=str).encode())
    for name, tensor in sorted(text_encoder.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def distinct_captions(captions: Iterable[str]) -> list[str]:
    """The sorted distinct captions, the empty prompt included (caption dropout replaces captions by it)."""
    return sorted(set(captions) | {NULL_PROMPT})


def build_text_cache(
    accelerator,
    tokenizer,
    text_encoder: torch.nn.Module,
    captions: Iterable[str],
    cache_dir: str,
    batch_size: int = 64,
) -> str:
    """Return the table of ``captions``' embeddings, encoding them on the main process first if it does not exist."""
    texts = distinct_captions(captions)
    key = {
        "version": TEXT_CACHE_VERSION,
        "encoder": text_encoder_fingerprint(tokenizer, text_encoder),
        "captions": hashlib.sha256(json.dumps(texts).encode()).hexdigest(),
    }
    fingerprint = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    path = os.path.join(cache_dir, f"text-{fingerprint}")
    if os.path.isfile(os.path.join(path, META_FILE)):
        logger.info("Reusing the text-embedding cache %s", path)
        return path
    if accelerator.is_main_process:
        tmp = os.path.join(cache_dir, f".text-{fingerprint}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(cache_dir, exist_ok=True)
        embeddings, masks = [], []
        for start in range(0, len(texts), batch_size):
            hidden, mask = encode_text(tokenizer, text_encoder, texts[start : start + batch_size])
            embeddings.append(hidden.float().cpu())
            masks.append(mask.cpu())
        hidden, mask = torch.cat(embeddings).numpy(), torch.cat(masks).to(torch.int8).numpy()
        features = datasets.Features(
            {
                "caption": datasets.Value("string"),
                "encoder_hidden_states": datasets.Array2D(shape=hidden.shape[1:], dtype="float32"),
                "encoder_attention_mask": datasets.Sequence(datasets.Value("int8"), length=mask.shape[1]),
            }
        )
        columns = {"caption": texts, "encoder_hidden_states": hidden, "encoder_attention_mask": mask}
        with quiet_datasets():
            datasets.Dataset.from_dict(columns, features=features).save_to_disk(tmp)
        with open(os.path.join(tmp, META_FILE), "w") as f:
            json.dump({"fingerprint": fingerprint, "num_captions": len(texts)}, f)
        shutil.rmtree(path, ignore_errors=True)
        os.replace(tmp, path)
        logger.info("Wrote the text-embedding cache %s (%d distinct captions)", path, len(texts))
    accelerator.wait_for_everyone()
    return path


class TextEmbeddings:
    """Captions -> ``(B x S x D embeddings, B x S attention mask)``: looked up in a cache table, or encoded now.

    Args:
        tokenizer / text_encoder: the frozen CLIP tokenizer and text model (used when ``table_path`` is None).
        table_path: a table from :func:`build_text_cache`.
    """

    def __init__(self, tokenizer, text_encoder: torch.nn.Module, table_path: str | None = None):
        self.tokenizer, self.text_encoder = tokenizer, text_encoder
        self.table = self.rows = None
        if table_path is not None:
            table = datasets.load_from_disk(table_path)
            self.rows = {caption: row for row, caption in enumerate(table["caption"])}
            self.table = table.with_format("torch", columns=["encoder_hidden_states", "encoder_attention_mask"])

    def __call__(self, captions: Sequence[str], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if self.table is None:
            hidden, mask = encode_text(self.tokenizer, self.text_encoder, list(captions), device)
            return hidden.float(), mask
        missing = [c for c in captions if c not in self.rows]
        if missing:
            raise ValueError(f"Caption {missing[0]!r} is not in the text-embedding cache: rebuild it (a new run does).")
        batch = self.table[[self.rows[c] for c in captions]]
        return batch["encoder_hidden_states"].to(device), batch["encoder_attention_mask"].to(device)
