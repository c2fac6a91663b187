"""LMDModel: shapes, masking semantics, the masked loss, serialisation, training features (method.md §2)."""

import copy

import pytest
import torch

from diffusers_lmd import LMD_PRESETS, LMDModel
from diffusers_lmd.masking import patchify, random_mask
from diffusers_lmd.models.embeddings import sincos_2d_position_embedding


def tiny_model(seed: int = 0, **overrides) -> LMDModel:
    torch.manual_seed(seed)
    return LMDModel.from_preset("tiny", **{"sample_size": 8, "in_channels": 4, "patch_size": 2, **overrides}).eval()


def latents_like(b=2, c=4, h=8, w=8, seed=1) -> torch.Tensor:
    return torch.randn(b, c, h, w, generator=torch.Generator().manual_seed(seed))


def fixed_mask(b: int, num_tokens: int, ratio: float = 0.5, seed: int = 2) -> torch.Tensor:
    return random_mask(b, num_tokens, ratio, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(
    "patch_size,height,width",
    [(1, 4, 4), (2, 8, 8), (4, 8, 8), (2, 6, 10), (4, 12, 8)],
    ids=["p1", "p2", "p4", "p2-nonsquare", "p4-nonsquare"],
)
def test_output_shapes(patch_size, height, width):
    model = tiny_model(sample_size=(height, width), patch_size=patch_size)
    latents = latents_like(3, 4, height, width)
    out = model(latents, mask_ratio=0.5)
    num_tokens = (height // patch_size) * (width // patch_size)
    assert model.num_tokens(height, width) == num_tokens
    assert out.sample.shape == latents.shape
    assert out.mask.shape == (3, num_tokens)
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    sample, mask, loss = model(latents, mask=out.mask, return_dict=False)
    assert sample.shape == latents.shape and torch.equal(mask, out.mask) and loss.ndim == 0


def test_other_latent_sizes_work_with_computed_position_embeddings():
    model = tiny_model()  # built for 8 x 8
    assert model(latents_like(1, 4, 12, 6), mask_ratio=0.3).sample.shape == (1, 4, 12, 6)


@pytest.mark.parametrize("ratio", [0.0, 0.15, 0.45, 0.75, 0.9, 1.0])
def test_exact_masked_count_and_only_visible_tokens_enter_the_encoder(ratio):
    model = tiny_model()
    seen = []
    model.blocks[0].register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[1]))
    num_tokens = 16
    out = model(latents_like(4), mask_ratio=ratio)
    expected_masked = num_tokens - int(num_tokens * (1 - ratio))
    assert out.mask.sum(dim=1).tolist() == [float(expected_masked)] * 4
    assert seen == [1 + num_tokens - expected_masked]  # CLS + visible tokens only


def test_default_mask_ratio_is_mae_075():
    out = tiny_model()(latents_like(2))
    assert out.mask.sum(dim=1).tolist() == [16.0 - int(16 * 0.25)] * 2


def test_loss_is_mse_over_masked_patches_only():
    model = tiny_model()
    latents = latents_like(3)
    mask = fixed_mask(3, 16, 0.5)
    out = model(latents, mask=mask)
    pred, target = patchify(out.sample, 2), patchify(latents, 2)
    per_patch = ((pred - target) ** 2).mean(dim=-1)
    expected = per_patch[mask.bool()].mean()
    torch.testing.assert_close(out.loss, expected)
    # nothing masked: nothing to learn, loss 0 rather than NaN
    assert model(latents, mask=torch.zeros(3, 16)).loss.item() == 0.0


def test_masked_inputs_do_not_affect_the_output_but_visible_ones_do():
    model = tiny_model()
    latents = latents_like(1)
    mask = torch.zeros(1, 16)
    mask[0, [0, 5, 6, 11]] = 1  # token 5 = patch row 1, column 1
    base = model(latents, mask=mask).sample

    changed_masked = latents.clone()
    changed_masked[:, :, 2:4, 2:4] += 10.0
    torch.testing.assert_close(model(changed_masked, mask=mask).sample, base, rtol=0, atol=0)

    changed_visible = latents.clone()
    changed_visible[:, :, 0:2, 2:4] += 10.0  # token 1, visible
    assert not torch.allclose(model(changed_visible, mask=mask).sample, base)


def test_ragged_explicit_masks_match_running_each_sample_alone():
    model = tiny_model()
    latents = latents_like(4)
    mask = torch.zeros(4, 16)
    mask[0, :3] = 1
    mask[1, 2:15] = 1
    mask[2, [1, 7, 9]] = 1
    mask[3] = 1  # nothing visible at all
    batched = model(latents, mask=mask)
    losses = []
    for i in range(4):
        alone = model(latents[i : i + 1], mask=mask[i : i + 1])
        torch.testing.assert_close(batched.sample[i : i + 1], alone.sample, rtol=1e-5, atol=1e-5)
        losses.append(alone.loss * mask[i].sum())
    # the batch loss averages over every masked patch of every row
    torch.testing.assert_close(batched.loss, torch.stack(losses).sum() / mask.sum(), rtol=1e-5, atol=1e-6)


def test_bool_mask_equals_float_mask():
    model = tiny_model()
    latents, mask = latents_like(2), fixed_mask(2, 16)
    torch.testing.assert_close(model(latents, mask=mask.bool()).sample, model(latents, mask=mask).sample)


def test_generator_makes_the_random_mask_and_output_reproducible():
    model = tiny_model()
    latents = latents_like(3)
    a = model(latents, mask_ratio=0.5, generator=torch.Generator().manual_seed(11))
    b = model(latents, mask_ratio=0.5, generator=torch.Generator().manual_seed(11))
    c = model(latents, mask_ratio=0.5, generator=torch.Generator().manual_seed(12))
    assert torch.equal(a.mask, b.mask) and torch.equal(a.sample, b.sample) and torch.equal(a.loss, b.loss)
    assert not torch.equal(a.mask, c.mask)


def test_save_pretrained_writes_safetensors_and_reloads_identically(tmp_path):
    model = tiny_model(sample_size=(8, 12))
    latents, mask = latents_like(2, 4, 8, 12), fixed_mask(2, 24)
    expected = model(latents, mask=mask)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").is_file()
    assert not list(tmp_path.glob("*.bin"))
    loaded = LMDModel.from_pretrained(tmp_path).eval()
    assert tuple(loaded.config.sample_size) == (8, 12)
    out = loaded(latents, mask=mask)
    assert torch.equal(out.sample, expected.sample) and torch.equal(out.loss, expected.loss)


def test_from_config_round_trip_rebuilds_the_same_architecture():
    model = tiny_model(decoder_num_layers=2)
    rebuilt = LMDModel.from_config(model.config).eval()
    assert dict(rebuilt.config) == dict(model.config)
    rebuilt.load_state_dict(model.state_dict())  # strict: same parameter names and shapes
    latents, mask = latents_like(2), fixed_mask(2, 16)
    assert torch.equal(rebuilt(latents, mask=mask).sample, model(latents, mask=mask).sample)


def test_presets():
    base = LMD_PRESETS["base"]  # MAE's ViT-B encoder (768 wide, 12 blocks, 12 heads) and its 512-wide decoder
    assert [base[f"{part}{key}"] for part in ("", "decoder_") for key in ("hidden_size", "num_layers")] == [
        768, 12, 512, 8,
    ]  # fmt: skip
    assert (base["num_attention_heads"], base["decoder_num_attention_heads"], len(base)) == (12, 16, 6)
    assert (LMD_PRESETS["base-gen"]["num_layers"], LMD_PRESETS["base-gen"]["decoder_num_layers"]) == (8, 12)
    small = LMDModel.from_preset("small", sample_size=8, num_layers=1, decoder_num_layers=1)
    assert small.config.hidden_size == 192 and len(small.blocks) == 1


def test_gradient_checkpointing_gives_the_same_gradients():
    model = tiny_model().train()
    checkpointed = copy.deepcopy(model)
    checkpointed.enable_gradient_checkpointing()
    assert checkpointed.gradient_checkpointing
    latents, mask = latents_like(2), fixed_mask(2, 16)
    model(latents, mask=mask).loss.backward()
    checkpointed(latents, mask=mask).loss.backward()
    for (name, p), q in zip(model.named_parameters(), checkpointed.parameters()):
        torch.testing.assert_close(q.grad, p.grad, msg=name)


def test_bf16_autocast_forward_and_backward_on_cpu():
    model = tiny_model().train()
    latents, mask = latents_like(2), fixed_mask(2, 16)
    reference = model(latents, mask=mask).loss.item()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(latents, mask=mask)
    assert out.sample.dtype == torch.float32  # the latents' dtype
    assert out.loss.dtype == torch.float32
    assert out.loss.item() == pytest.approx(reference, rel=0.05)
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert all(getattr(model.blocks[0].attn, name).weight.grad.abs().sum() > 0 for name in ("to_q", "to_k", "to_v"))


def test_torch_compile_training_forward_has_no_graph_break():
    model = tiny_model().train()
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="eager", fullgraph=True)  # fullgraph raises on any graph break
    out = compiled(latents_like(2), mask_ratio=0.5)
    out.loss.backward()
    assert out.mask.sum(dim=1).tolist() == [8.0, 8.0]
    assert model.blocks[-1].mlp[2].weight.grad is not None


def test_explicit_mask_graph_breaks_only_where_the_visible_count_is_read():
    """An explicit mask has a data-dependent visible count; the block loops must still trace whole."""
    model = tiny_model()
    torch._dynamo.reset()
    mask = torch.zeros(2, 16)
    mask[0, :5] = 1
    mask[1, 3:6] = 1
    explanation = torch._dynamo.explain(model)(latents_like(2), mask=mask)
    torch._dynamo.reset()
    assert {reason.user_stack[-1].name for reason in explanation.break_reasons} <= {"mask_tokens"}


def test_position_embedding_is_fixed_2d_sincos():
    emb = sincos_2d_position_embedding(16, 3, 4)
    assert emb.shape == (12, 16)
    # first half of the channels depends on the row only, second half on the column only
    assert torch.equal(emb[0, :8], emb[3, :8]) and not torch.equal(emb[0, :8], emb[4, :8])
    assert torch.equal(emb[0, 8:], emb[4, 8:]) and not torch.equal(emb[0, 8:], emb[1, 8:])
    assert torch.allclose(emb[0], torch.tensor([0.0] * 4 + [1.0] * 4 + [0.0] * 4 + [1.0] * 4))
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_2d_position_embedding(18, 2, 2)


def test_model_position_embeddings_are_computed_not_stored():
    model = tiny_model(sample_size=(8, 12), decoder_hidden_size=16)
    like = torch.zeros(1)
    for height, width in [(8, 12), (12, 8), (4, 4)]:  # the configured size (cached) and others
        for dim in (32, 16):
            expected = sincos_2d_position_embedding(dim, height // 2, width // 2)[None]
            assert torch.equal(model.position_embedding(height, width, dim, like), expected)
    assert not any("pos_embed" in key for key in model.state_dict())  # checkpoints hold learned weights only


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(mask_ratio=1.5), r"mask_ratio must lie in \[0, 1\]"),
        (dict(mask_ratio=-0.2), r"mask_ratio must lie in \[0, 1\]"),
        (dict(latents=latents_like(2, 3)), "3 channels but the model expects in_channels=4"),
        (dict(latents=latents_like(2, 4, 8, 7)), "not divisible by patch_size=2"),
        (dict(latents=torch.randn(4, 8, 8)), "B x C x H x W"),
        (dict(mask=torch.zeros(2, 15)), r"mask must have shape \(2, 16\)"),
        (dict(mask=torch.zeros(1, 16)), r"mask must have shape \(2, 16\)"),
        (dict(mask=torch.zeros(2, 16), mask_ratio=0.5), "either mask or mask_ratio"),
        (dict(latents=latents_like(2).index_fill(2, torch.tensor([3]), float("nan"))), "NaN"),
    ],
    ids=["ratio-above-one", "ratio-negative", "channels", "patch", "ndim", "mask-tokens", "mask-batch", "both", "nan"],
)
def test_bad_input_raises_value_error_naming_the_problem(kwargs, match):
    model = tiny_model()
    latents = kwargs.pop("latents", latents_like(2))
    with pytest.raises(ValueError, match=match):
        model(latents, **kwargs)


def test_bad_construction_raises():
    with pytest.raises(ValueError, match="Unknown preset 'huge'"):
        LMDModel.from_preset("huge")
    with pytest.raises(ValueError, match="not divisible by patch_size=4"):
        LMDModel.from_preset("tiny", sample_size=6, patch_size=4)
    with pytest.raises(ValueError, match="num_attention_heads=3"):
        LMDModel.from_preset("tiny", num_attention_heads=3)


def test_the_loss_is_computed_only_when_asked():
    model = tiny_model(head_type="diffusion", mse_loss_weight=0.5)
    latents, mask = latents_like(2), fixed_mask(2, 16)
    full = model(latents, mask=mask, generator=torch.Generator().manual_seed(0))
    calls = []
    original = model.diffusion_head.loss
    model.diffusion_head.loss = lambda *a, **k: calls.append(1) or original(*a, **k)
    bare = model(latents, mask=mask, return_loss=False)
    assert bare.loss is None and not calls and torch.equal(bare.sample, full.sample)
    sample, used, loss = model(latents, mask=mask, generator=torch.Generator().manual_seed(0), return_dict=False)
    assert calls and torch.equal(loss, full.loss)  # the trainer's call still gets (sample, mask, loss)


def test_the_finiteness_check_stays_off_the_training_step(monkeypatch):
    model = tiny_model().train()
    nan = latents_like(2).index_fill(2, torch.tensor([3]), float("nan"))
    calls = []
    isfinite = torch.isfinite
    monkeypatch.setattr(torch, "isfinite", lambda x: calls.append(x.shape) or isfinite(x))
    loss = model(nan, mask_ratio=0.5).loss
    assert not calls  # no isfinite (a host-device sync) on the training step
    assert not isfinite(loss)  # the NaN shows in the loss, which the trainer stops on
    with pytest.raises(ValueError, match="NaN or infinite"):
        model.eval()(nan, mask_ratio=0.5)  # inference still says what is wrong
