"""Class and text conditioning of LMDModel (method.md §9), and how conditions travel through training: the latent and
text-embedding caches, label/caption dropout, resume, and the saved pipeline."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from conftest import TINY_TEXT_MAX_LENGTH, tiny_clip

from diffusers_lmd import LMDModel, LMDPipeline
from diffusers_lmd.masking import random_mask
from diffusers_lmd.pipelines.text_inputs import encode_text
from diffusers_lmd.training import parse_lmd_args, read_jsonl, train_lmd
from diffusers_lmd.training.latent_cache import CachedLatentDataset
from diffusers_lmd.training.text_cache import TextEmbeddings, build_text_cache

NUM_TOKENS = 16


def model_with(seed: int = 0, **config) -> LMDModel:
    torch.manual_seed(seed)
    return LMDModel.from_preset("tiny", sample_size=8, in_channels=4, patch_size=2, **config).eval()


def latents(batch: int = 3, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 4, 8, 8, generator=torch.Generator().manual_seed(seed))


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------------------------- class labels
def test_the_class_changes_the_prediction_and_none_is_the_null_class():
    model = model_with(num_class_embeds=3)
    x, mask = latents(), random_mask(3, NUM_TOKENS, 0.75, generator=gen())
    per_class = [model(x, mask=mask, class_labels=torch.full((3,), c)).sample for c in range(4)]
    assert not torch.allclose(per_class[0], per_class[1])
    assert torch.equal(model(x, mask=mask).sample, per_class[3])  # label 3 = num_class_embeds = the null class
    assert torch.equal(model(x, mask=mask, class_labels=[0, 1, 2]).sample[1], per_class[1][1])  # a list works too


def test_condition_tokens_are_never_masked_so_a_fully_masked_latent_still_has_encoder_input():
    model = model_with(num_class_embeds=3, num_condition_tokens=5)
    seen = []
    model.blocks[0].register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[1]))
    out = model(latents(), mask_ratio=1.0, class_labels=torch.tensor([0, 1, 2]))
    assert out.mask.sum().item() == 3 * NUM_TOKENS
    assert seen == [1 + 5]  # CLS + the class tokens, no image token
    assert torch.isfinite(out.loss) and out.loss > 0
    a = model(latents(), mask_ratio=1.0, class_labels=torch.tensor([0, 0, 0])).sample
    b = model(latents(), mask_ratio=1.0, class_labels=torch.tensor([1, 1, 1])).sample
    assert not torch.allclose(a, b)  # with nothing visible, the class alone decides


def test_label_dropout_draws_from_the_forwards_generator_in_training_only():
    model = model_with(num_class_embeds=3, class_dropout_prob=0.5).train()
    x, labels = latents(8), torch.zeros(8, dtype=torch.long)
    first = model(x, mask_ratio=0.5, generator=gen(3), class_labels=labels)
    again = model(x, mask_ratio=0.5, generator=gen(3), class_labels=labels)
    assert torch.equal(first.sample, again.sample) and torch.equal(first.loss, again.loss)
    null = model(x, mask=first.mask, class_labels=torch.full((8,), 3)).sample
    kept = model.eval()(x, mask=first.mask, class_labels=labels).sample
    dropped = [torch.allclose(first.sample[i], null[i], atol=1e-6) for i in range(8)]
    assert 0 < sum(dropped) < 8  # some rows got the null class, some kept theirs
    assert all(torch.allclose(first.sample[i], kept[i], atol=1e-6) for i in range(8) if not dropped[i])
    assert torch.equal(model(x, mask=first.mask, class_labels=labels).sample, kept)  # no dropout in eval


def test_ragged_masks_with_condition_tokens_match_single_runs():
    model = model_with(num_class_embeds=3)
    mask = torch.zeros(3, NUM_TOKENS)
    mask[0, :3], mask[1, 2:15], mask[2] = 1, 1, 1
    labels = torch.tensor([2, 0, 1])
    batched = model(latents(), mask=mask, class_labels=labels).sample
    for i in range(3):
        alone = model(latents()[i : i + 1], mask=mask[i : i + 1], class_labels=labels[i : i + 1]).sample
        torch.testing.assert_close(batched[i : i + 1], alone, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------------------------------- text
def test_text_enters_through_cross_attention_and_padding_is_ignored():
    model = model_with(cross_attention_dim=12, encoder_cross_attention=False)
    x, mask = latents(2), random_mask(2, NUM_TOKENS, 0.5, generator=gen())
    text = torch.randn(2, 5, 12, generator=gen(4))
    keep = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    base = model(x, mask=mask, encoder_hidden_states=text, encoder_attention_mask=keep).sample
    other = text.clone()
    other[0, 3:] += 5.0  # only padding of row 0 changes
    same = model(x, mask=mask, encoder_hidden_states=other, encoder_attention_mask=keep).sample
    torch.testing.assert_close(same, base, rtol=0, atol=0)
    other[0, 0] += 5.0  # a real token
    changed = model(x, mask=mask, encoder_hidden_states=other, encoder_attention_mask=keep).sample
    assert not torch.allclose(changed[0], base[0]) and torch.equal(changed[1], base[1])
    assert all(block.cross_attn is not None for block in model.decoder_blocks)
    assert all(block.cross_attn is None for block in model.blocks)  # encoder_cross_attention=False: decoder only


def test_encoder_cross_attention_lets_the_text_reach_the_encoder():
    model = model_with(cross_attention_dim=12)  # the encoder attends to the text by default
    assert all(block.cross_attn is not None for block in model.blocks)
    x = latents(1)
    encoded = [
        model.forward_encoder(x, torch.zeros(1, NUM_TOKENS), context=torch.randn(1, 4, 12, generator=gen(s)))[0]
        for s in (0, 1)
    ]
    assert not torch.allclose(*encoded)


CONDITION_ERRORS = [
    (dict(num_class_embeds=3), dict(class_labels=torch.tensor([0, 1, 4])), r"class_labels must lie in \[0, 3\)"),
    (dict(num_class_embeds=3), dict(class_labels=torch.tensor([0.0, 1.0, 2.0])), "integer"),
    (dict(num_class_embeds=3), dict(class_labels=torch.tensor([0, 1])), "2 class_labels for a batch of 3"),
    (dict(), dict(class_labels=torch.tensor([0, 1, 2])), "no class conditioning"),
    (dict(), dict(encoder_hidden_states=torch.randn(3, 4, 12)), "no text conditioning"),
    (dict(cross_attention_dim=12), dict(), "pass encoder_hidden_states"),
    (dict(cross_attention_dim=12), dict(encoder_hidden_states=torch.randn(3, 4, 8)), r"3 x sequence x 12"),
    (
        dict(cross_attention_dim=12),
        dict(encoder_hidden_states=torch.randn(3, 4, 12), encoder_attention_mask=torch.ones(3, 5)),
        "encoder_attention_mask must be",
    ),
    (
        dict(cross_attention_dim=12),
        dict(encoder_hidden_states=torch.randn(3, 4, 12), encoder_attention_mask=torch.zeros(3, 4)),
        "at least one text token",
    ),
]


@pytest.mark.parametrize("config, kwargs, match", CONDITION_ERRORS, ids=[m[:24] for *_, m in CONDITION_ERRORS])
def test_bad_conditions_raise_a_value_error_naming_the_argument(config, kwargs, match):
    with pytest.raises(ValueError, match=match):
        model_with(**config)(latents(), mask_ratio=0.5, **kwargs)


@pytest.mark.parametrize(
    "config, match",
    [
        (dict(num_class_embeds=0), "num_class_embeds"),
        (dict(num_class_embeds=3, class_dropout_prob=1.0), "class_dropout_prob"),
        (dict(num_class_embeds=3, num_condition_tokens=0), "num_condition_tokens"),
        (dict(head_type="flow"), "head_type"),
        (dict(mse_loss_weight=0.5), "mse_loss_weight"),
    ],
)
def test_bad_conditioning_config_raises(config, match):
    with pytest.raises(ValueError, match=match):
        model_with(**config)


def test_checkpoints_saved_before_the_options_existed_load_unchanged(tmp_path):
    model = model_with()
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    new_keys = {"num_class_embeds", "class_dropout_prob", "num_condition_tokens", "cross_attention_dim", "head_type"}
    assert new_keys <= set(config)
    old = {
        k: v for k, v in config.items() if k not in new_keys and not k.startswith(("diffusion_", "mse_", "encoder_"))
    }
    (tmp_path / "config.json").write_text(json.dumps(old))
    loaded = LMDModel.from_pretrained(tmp_path).eval()
    assert loaded.config.head_type == "mse" and loaded.class_embedding is None and loaded.diffusion_head is None
    x, mask = latents(), random_mask(3, NUM_TOKENS, 0.5, generator=gen())
    assert torch.equal(loaded(x, mask=mask).sample, model(x, mask=mask).sample)
    sample, used, loss = loaded(x, mask_ratio=0.75, generator=gen(), return_dict=False)  # the trainer's call
    assert sample.shape == x.shape and used.shape == (3, NUM_TOKENS) and loss.ndim == 0


# ------------------------------------------------------------------------------------------- training data
def caption_folder(root, per_class: int = 4):
    """An imagefolder of two colours with a ``text`` caption per image (metadata.jsonl)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    (root / "train").mkdir(parents=True)
    with open(root / "train" / "metadata.jsonl", "w") as f:
        for name, colour in (("red", (200, 30, 30)), ("blue", (30, 30, 200))):
            for i in range(per_class):
                pixels = (np.array(colour) + rng.integers(0, 40, (16, 16, 3))).clip(0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(root / "train" / f"{name}{i}.png")
                f.write(json.dumps({"file_name": f"{name}{i}.png", "text": f"a {name} square"}) + "\n")
    return str(root)


def lmd_argv(projector, data_dir, tmp_path, *extra, name="out") -> list[str]:
    return [
        "--projector_path", projector, "--train_data_dir", data_dir, "--output_dir", str(tmp_path / name),
        "--latent_cache_dir", str(tmp_path / "cache"), "--resolution", "16", "--preset", "tiny",
        "--train_batch_size", "4", "--learning_rate", "1e-3", "--report_to", "none", "--validation_steps", "1000",
        "--eval_split_ratio", "0.2", *map(str, extra),
    ]  # fmt: skip


@pytest.mark.usefixtures("one_thread", "fresh_accelerate_state")
def test_labels_travel_through_the_latent_cache_and_name_the_pipelines_classes(
    tiny_projector_path, make_image_folder, tmp_path
):
    data = make_image_folder(tmp_path / "images", per_class=5)
    args = parse_lmd_args(
        lmd_argv(tiny_projector_path, data, tmp_path, "--label_column", "label", "--max_train_steps", 2)
    )
    train_lmd(args)
    (cache,) = [p for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".")]
    table = CachedLatentDataset(str(cache))
    labels = table.__getitems__(list(range(len(table))))["class_labels"]
    assert sorted(set(labels.tolist())) == [0, 1] and len(labels) == len(table)
    index = json.loads((tmp_path / "out" / "model_index.json").read_text())
    assert index["id2label"] == {"0": "blue", "1": "red"}  # imagefolder's ClassLabel names, sorted
    pipe = LMDPipeline.from_pretrained(tmp_path / "out")
    assert pipe.get_label_ids(["red", "blue"]) == [1, 0]
    assert pipe.transformer.config.num_class_embeds == 2 and pipe.transformer.config.class_dropout_prob == 0.1
    assert (tmp_path / "out" / "samples.png").is_file()


@pytest.mark.usefixtures("one_thread", "fresh_accelerate_state")
def test_a_label_column_that_is_not_a_class_label_or_absent_fails_before_training(
    tiny_projector_path, make_image_folder, tmp_path
):
    data = make_image_folder(tmp_path / "images")
    with pytest.raises(ValueError, match="--label_column 'colour' is not in the dataset"):
        train_lmd(parse_lmd_args(lmd_argv(tiny_projector_path, data, tmp_path, "--label_column", "colour")))
    captions = caption_folder(tmp_path / "captions")
    with pytest.raises(ValueError, match="not a datasets.ClassLabel"):
        train_lmd(parse_lmd_args(lmd_argv(tiny_projector_path, captions, tmp_path, "--label_column", "text")))
    with pytest.raises(ValueError, match="demo photos have neither"):
        argv = lmd_argv(tiny_projector_path, data, tmp_path, "--label_column", "label")
        argv.remove("--train_data_dir"), argv.remove(data)
        train_lmd(parse_lmd_args(argv))


@pytest.mark.parametrize(
    "extra, match",
    [
        (["--caption_column", "text"], "--text_encoder_name_or_path go together"),
        (["--conditioning_dropout_prob", "1.0"], "--conditioning_dropout_prob"),
        (["--mse_loss_weight", "0.5"], "--head_type diffusion"),
        (["--mask_ratio_max", "1.2"], "--mask_ratio_max <= 1"),
        (["--num_condition_tokens", "8"], "--label_column"),
    ],
)
def test_bad_generation_flags_name_the_flag(tiny_projector_path, tmp_path, extra, match):
    with pytest.raises(ValueError, match=match):
        parse_lmd_args(lmd_argv(tiny_projector_path, str(tmp_path), tmp_path, *extra))


def test_the_text_cache_holds_each_distinct_caption_once_and_equals_encoding_now(tmp_path):
    tokenizer, text_encoder = tiny_clip()
    captions = ["a red square", "a blue square", "a red square"]
    path = build_text_cache(Accelerator(cpu=True), tokenizer, text_encoder, captions, str(tmp_path))
    assert build_text_cache(Accelerator(cpu=True), tokenizer, text_encoder, captions[::-1], str(tmp_path)) == path
    cached, online = TextEmbeddings(tokenizer, text_encoder, path), TextEmbeddings(tokenizer, text_encoder)
    assert len(cached.rows) == 3  # two captions and the empty prompt
    asked = ["a blue square", "", "a red square"]
    (hidden, mask), (expected, expected_mask) = cached(asked, "cpu"), online(asked, "cpu")
    assert hidden.shape == (3, TINY_TEXT_MAX_LENGTH, 16)
    torch.testing.assert_close(hidden, expected)
    assert torch.equal(mask.long(), expected_mask.long())
    torch.testing.assert_close(hidden[1:2], encode_text(tokenizer, text_encoder, [""])[0])
    with pytest.raises(ValueError, match="not in the text-embedding cache"):
        cached(["a green square"], "cpu")
    other = build_text_cache(Accelerator(cpu=True), tokenizer, tiny_clip(seed=1)[1], captions, str(tmp_path))
    assert other != path  # another text encoder, another table


@pytest.mark.usefixtures("one_thread", "fresh_accelerate_state")
def test_a_text_conditional_diffusion_run_resumes_exactly(
    tiny_projector_path, tiny_text_encoder_path, tmp_path, monkeypatch
):
    """Caption dropout, MAR's random mask ratio and the diffusion loss's noise all repeat after a resume."""
    data = caption_folder(tmp_path / "captions")
    common = [
        "--caption_column", "text", "--text_encoder_name_or_path", tiny_text_encoder_path, "--head_type", "diffusion",
        "--conditioning_dropout_prob", 0.5, "--mask_schedule", "truncnorm", "--mask_ratio_min", 0.7,
        "--mask_ratio_max", 1.0, "--max_train_steps", 5, "--checkpointing_steps", 2,
    ]  # fmt: skip
    train_lmd(parse_lmd_args(lmd_argv(tiny_projector_path, data, tmp_path, *common, name="full")))
    assert any(p.name.startswith("text-") for p in (tmp_path / "cache").iterdir())

    from diffusers_lmd.training import logging as train_logging

    original_log = train_logging.JsonlLogger.log

    def killed_after_step_3(self, record):
        original_log(self, record)
        if record.get("step") == 3 and "loss" in record:
            raise KeyboardInterrupt

    monkeypatch.setattr(train_logging.JsonlLogger, "log", killed_after_step_3)
    with pytest.raises(KeyboardInterrupt):
        train_lmd(parse_lmd_args(lmd_argv(tiny_projector_path, data, tmp_path, *common, name="cut")))
    monkeypatch.setattr(train_logging.JsonlLogger, "log", original_log)
    argv = lmd_argv(tiny_projector_path, data, tmp_path, *common, "--resume_from_checkpoint", "latest", name="cut")
    train_lmd(parse_lmd_args(argv))
    records = {
        name: [r for r in read_jsonl(os.path.join(tmp_path, name, "train_log.jsonl")) if "loss" in r]
        for name in ("full", "cut")
    }
    assert [r["mask_ratio"] for r in records["cut"]] == [r["mask_ratio"] for r in records["full"]]
    assert len({r["mask_ratio"] for r in records["full"]}) > 1  # drawn anew each step
    assert all(0.7 <= r["mask_ratio"] <= 1.0 for r in records["full"])
    assert [r["loss"] for r in records["cut"]] == pytest.approx([r["loss"] for r in records["full"]], rel=1e-5)
    pipe = LMDPipeline.from_pretrained(tmp_path / "full")
    assert pipe.tokenizer is not None and pipe.text_encoder is not None and pipe.head_scheduler is not None
    assert pipe.transformer.config.cross_attention_dim == 16 and pipe.transformer.config.head_type == "diffusion"
