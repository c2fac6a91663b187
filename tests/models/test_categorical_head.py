"""The categorical head over a VQModel's codebook (MaskGIT / Muse style): its targets are the projector's nearest
codes, the encoder sees quantised latents, the cross-entropy learns, the codebook is saved, bad options are refused."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from diffusers import VQModel

from diffusers_lmd import LMDModel
from diffusers_lmd.masking import patchify, random_mask, unpatchify
from diffusers_lmd.models.categorical_head import code_targets, codes_to_latents, quantise, sample_codes
from diffusers_lmd.projector import nearest_codes, vq_codebook
from tests.conftest import TINY_PROJECTOR

pytestmark = pytest.mark.usefixtures("one_thread")
K = 16


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def codebook() -> torch.Tensor:
    torch.manual_seed(0)
    return vq_codebook(VQModel(**TINY_PROJECTOR, num_vq_embeddings=K, vq_embed_dim=4))


def categorical_model(codebook=None, seed: int = 0, **config) -> LMDModel:
    torch.manual_seed(seed)
    model = LMDModel.from_preset(
        "tiny", sample_size=8, in_channels=4, patch_size=2, head_type="categorical", codebook_size=K, **config
    )
    if codebook is not None:
        model.set_codebook(codebook)
    return model


def latents(batch: int = 4, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 4, 8, 8, generator=gen(seed))


def test_the_targets_are_the_nearest_codes_and_the_loss_is_their_cross_entropy(codebook):
    x = latents()
    targets = code_targets(x, codebook, 2)
    assert targets.shape == (4, 16, 4) and targets.dtype == torch.long
    assert torch.equal(unpatchify(targets, 2, 8, 8)[:, 0], nearest_codes(x, codebook))
    assert torch.equal(codes_to_latents(targets, codebook, 2, 8, 8), quantise(x, codebook))

    model = categorical_model(codebook)
    assert model.decoder_pred is None and model.diffusion_head is None
    mask = random_mask(4, 16, 0.75, generator=gen(3))
    out = model(x, mask=mask)
    logits = model.code_logits(model.forward_features(x, mask))
    assert logits.shape == (4, 16, 4, K)
    per_token = F.cross_entropy(logits.flatten(0, 2), targets.flatten(), reduction="none").view(4, 16, 4).mean(-1)
    torch.testing.assert_close(out.loss, per_token[mask > 0].mean())
    assert model(x, mask=torch.zeros(4, 16)).loss.item() == 0.0  # nothing masked, nothing to learn


def test_the_encoder_sees_quantised_latents_and_the_sample_is_the_most_likely_codes(codebook):
    model = categorical_model(codebook).eval()
    x, mask = latents(), random_mask(4, 16, 0.5, generator=gen(2))
    with torch.no_grad():
        raw = model(x, mask=mask)
        quantised = model(quantise(x, codebook), mask=mask)
    torch.testing.assert_close(raw.loss, quantised.loss)
    torch.testing.assert_close(raw.sample, quantised.sample)
    # every position of the sample is one of the codes' latents: the argmax of the logits
    with torch.no_grad():
        best = model.code_logits(model.forward_features(x, mask)).argmax(-1)
    assert torch.equal(raw.sample, codes_to_latents(best, codebook, 2, 8, 8))
    assert torch.equal(quantise(raw.sample, codebook), raw.sample)


def test_the_cross_entropy_falls_on_a_fixed_batch():
    """Eight images each of one code (a codebook spread as normalised latents are): the visible tokens tell the masked
    ones, so the loss falls from about log K to near 0 in 30 steps, with a new random mask each step."""
    codebook = torch.randn(K, 4, generator=gen(0))
    model = categorical_model(codebook).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    x = codebook[torch.arange(8) * 2][:, :, None, None].expand(8, 4, 8, 8).contiguous()
    losses = []
    for step in range(30):
        loss = model(x, mask_ratio=0.75, generator=gen(step)).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(torch.log(torch.tensor(float(K))).item(), rel=0.3)  # about uniform at start
    assert losses[-1] < 0.3 * losses[0]


def test_an_extra_mse_head_adds_its_loss_against_the_quantised_latents(codebook):
    model = categorical_model(codebook, mse_loss_weight=0.5)
    assert model.decoder_pred is not None
    x, mask = latents(), random_mask(4, 16, 0.75, generator=gen(4))
    out = model(x, mask=mask)
    features = model.forward_features(x, mask)
    ce = model(x, mask=mask, return_loss=True).loss - 0.5 * model.forward_loss(
        patchify(quantise(x, codebook), 2), model.decoder_pred(features), mask
    )
    targets = code_targets(x, codebook, 2)
    per_token = F.cross_entropy(model.code_logits(features).flatten(0, 2), targets.flatten(), reduction="none")
    torch.testing.assert_close(ce, per_token.view(4, 16, 4).mean(-1)[mask > 0].mean())
    assert out.sample.shape == x.shape  # the MSE head's prediction


def test_the_codebook_round_trips_through_save_pretrained(codebook, tmp_path):
    model = categorical_model(codebook, num_class_embeds=3).eval()
    model.save_pretrained(tmp_path)
    loaded = LMDModel.from_pretrained(tmp_path).eval()
    assert torch.equal(loaded.codebook, codebook)
    x, mask = latents(), random_mask(4, 16, 0.5, generator=gen(5))
    with torch.no_grad():
        assert torch.equal(model(x, mask=mask, class_labels=[0, 1, 2, 3]).sample,
                           loaded(x, mask=mask, class_labels=[0, 1, 2, 3]).sample)  # fmt: skip


def test_an_unset_codebook_and_bad_options_are_refused(codebook):
    with pytest.raises(ValueError, match="codebook_size"):
        LMDModel.from_preset("tiny", sample_size=8, in_channels=4, head_type="categorical")
    with pytest.raises(ValueError, match="codebook_size"):
        LMDModel.from_preset("tiny", sample_size=8, in_channels=4, codebook_size=K)  # the MSE head
    with pytest.raises(ValueError, match="mse_loss_weight"):
        categorical_model(mse_loss_weight=-1.0)
    unset = categorical_model()
    with pytest.raises(ValueError, match="set_codebook"):
        unset(latents())
    with pytest.raises(ValueError, match="codebook must be"):
        unset.set_codebook(codebook[:, :3])
    with pytest.raises(ValueError, match="all zeros"):
        unset.set_codebook(torch.zeros(K, 4))
    with pytest.raises(ValueError, match="head_type='categorical'"):
        LMDModel.from_preset("tiny", sample_size=8, in_channels=4).set_codebook(codebook)
    model = categorical_model(codebook)
    model.load_state_dict({**model.state_dict(), "codebook": torch.zeros(K, 4)})  # loading checks again
    with pytest.raises(ValueError, match="set_codebook"):
        model(latents())


def test_class_labels_work_and_out_of_range_ones_are_refused(codebook):
    model = categorical_model(codebook, num_class_embeds=3)
    assert torch.isfinite(model(latents(), class_labels=[0, 1, 2, 3], generator=gen()).loss)  # 3 = the null class
    with pytest.raises(ValueError, match="class_labels"):
        model(latents(), class_labels=[0, 1, 2, 4])


def test_sample_codes_follows_the_logits_and_one_generator_per_row_repeats_single_rows():
    logits = torch.randn(3, 5, 4, K, generator=gen(0)) * 3
    codes, confidence = sample_codes(logits, gen(1))
    assert codes.shape == (3, 5, 4) and confidence.shape == (3, 5) and (confidence <= 0).all()
    expected = logits.log_softmax(-1).gather(-1, codes[..., None])[..., 0].sum(-1)
    torch.testing.assert_close(confidence, expected)
    assert torch.equal(sample_codes(logits, gen(1))[0], codes)
    peaked = torch.full((1, 2, 4, K), -1e4)
    peaked[..., 7] = 0.0
    assert (sample_codes(peaked, gen(2))[0] == 7).all()
    batch = sample_codes(logits, [gen(10), gen(11), gen(12)])[0]
    rows = [sample_codes(logits[i : i + 1], gen(10 + i))[0] for i in range(3)]
    assert torch.equal(batch, torch.cat(rows))
    draws = torch.stack([sample_codes(logits[:1], gen(s))[0] for s in range(200)])
    assert (draws != draws[0]).any()  # a draw, not the argmax
