"""Projector helpers over tiny random diffusers VQModel and AutoencoderKL (method.md §2, issue 2 item 4)."""

import pytest
import torch
from conftest import TINY_PROJECTOR
from diffusers import AutoencoderKL, VQModel

from diffusers_lmd import (
    LMDModel,
    check_compatible,
    decode_latents,
    downsample_factor,
    encode_images,
    estimate_latent_stats,
    latent_channels,
    set_latent_stats,
)


def tiny_vq(**overrides) -> VQModel:
    torch.manual_seed(0)
    return VQModel(**{**TINY_PROJECTOR, "num_vq_embeddings": 32, "vq_embed_dim": 4, **overrides}).eval()


def tiny_kl(**overrides) -> AutoencoderKL:
    torch.manual_seed(0)
    return AutoencoderKL(**{**TINY_PROJECTOR, **overrides}).eval()


def images(b=2, h=16, w=24, seed=0) -> torch.Tensor:
    return torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def raw_latents(vae, x):
    if isinstance(vae, VQModel):
        return vae.encode(x).latents
    return vae.encode(x).latent_dist.mode()


@pytest.fixture(params=["vq", "kl"])
def projector(request):
    return tiny_vq() if request.param == "vq" else tiny_kl()


def test_encode_and_decode_shapes(projector):
    assert latent_channels(projector) == 4
    assert downsample_factor(projector) == 2
    latents = encode_images(projector, images())
    assert latents.shape == (2, 4, 8, 12)
    assert not latents.requires_grad
    assert decode_latents(projector, latents).shape == (2, 3, 16, 24)


@torch.no_grad()
def test_vq_normalisation_uses_the_config_scaling_factor():
    vq = tiny_vq(scaling_factor=2.5)
    x = images()
    torch.testing.assert_close(encode_images(vq, x), raw_latents(vq, x) * 2.5)
    # decode undoes the scale, then the VQModel quantises
    z = raw_latents(vq, x)
    torch.testing.assert_close(decode_latents(vq, z * 2.5), vq.decode(z).sample, rtol=1e-4, atol=1e-5)


@torch.no_grad()
def test_kl_normalisation_uses_scaling_and_shift_factor():
    kl = tiny_kl(scaling_factor=3.0, shift_factor=0.4)
    x = images()
    z = raw_latents(kl, x)
    normalised = encode_images(kl, x)
    torch.testing.assert_close(normalised, (z - 0.4) * 3.0)
    torch.testing.assert_close(decode_latents(kl, normalised), kl.decode(z).sample, rtol=1e-4, atol=1e-4)


def test_kl_without_shift_factor_is_scale_only():
    kl = tiny_kl(scaling_factor=2.0)
    assert kl.config.shift_factor is None
    x = images()
    with torch.no_grad():
        torch.testing.assert_close(encode_images(kl, x), raw_latents(kl, x) * 2.0)


def test_estimated_stats_give_unit_variance_latents(projector):
    batches = [images(4, 16, 16, seed=s) for s in range(3)]
    scale, shift = estimate_latent_stats(projector, batches)
    assert scale > 0
    set_latent_stats(projector, scale, shift)
    assert projector.config.scaling_factor == pytest.approx(scale)
    latents = torch.cat([encode_images(projector, b) for b in batches])
    assert latents.var(unbiased=False).item() == pytest.approx(1.0, rel=1e-3)
    assert projector.config.shift_factor == pytest.approx(shift)  # a VQModel keeps its shift too (method.md §2)
    assert latents.mean().item() == pytest.approx(0.0, abs=1e-3)


def test_vq_latent_shift_survives_save_and_load_without_a_warning(tmp_path, caplog):
    vq = tiny_vq()
    x = images()
    raw = raw_latents(vq, x)
    set_latent_stats(vq, 2.0, 0.6)
    vq.save_pretrained(tmp_path / "vq")
    loaded = VQModel.from_pretrained(tmp_path / "vq")
    assert loaded.config.shift_factor == pytest.approx(0.6) and loaded.config.scaling_factor == pytest.approx(2.0)
    assert "shift_factor" not in caplog.text  # diffusers' "will be ignored" is wrong for this key
    vq.register_to_config(not_a_vq_option=1)  # any other unexpected key still gets diffusers' warning
    vq.save_pretrained(tmp_path / "other")
    VQModel.from_pretrained(tmp_path / "other")
    assert "not_a_vq_option" in caplog.text
    normalised = encode_images(loaded, x)
    torch.testing.assert_close(normalised, (raw - 0.6) * 2.0)
    torch.testing.assert_close(decode_latents(loaded, normalised), vq.decode(raw).sample, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="scaling_factor must be positive"):
        set_latent_stats(vq, 0.0, 0.0)


def test_estimate_latent_stats_reads_dataloader_dicts_and_stops_at_max_batches():
    kl = tiny_kl()
    batches = [{"pixel_values": images(2, 16, 16, seed=s)} for s in range(4)]
    first_two = estimate_latent_stats(kl, batches[:2])
    assert estimate_latent_stats(kl, batches, max_batches=2) == pytest.approx(first_two)
    assert estimate_latent_stats(kl, batches) != pytest.approx(first_two)
    # a DataLoader over a TensorDataset yields (images,) tuples
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.cat([images(2, 16, 16, 0), images(2, 16, 16, 1)])), batch_size=2
    )
    assert estimate_latent_stats(kl, loader) == pytest.approx(first_two)
    with pytest.raises(ValueError, match="no images"):
        estimate_latent_stats(kl, [])


def test_check_compatible(projector):
    model = LMDModel.from_preset("tiny", sample_size=8, in_channels=4, patch_size=2)
    check_compatible(projector, model, image_size=16)
    check_compatible(projector, model, image_size=(16, 24))
    with pytest.raises(ValueError, match="4-channel latents but the LMDModel expects in_channels=3"):
        check_compatible(projector, LMDModel.from_preset("tiny", sample_size=8, in_channels=3))
    with pytest.raises(ValueError, match="not divisible by patch_size=4"):
        check_compatible(projector, LMDModel.from_preset("tiny", sample_size=8, patch_size=4), image_size=(16, 12))
    with pytest.raises(ValueError, match="downsampling factor 2"):
        check_compatible(projector, model, image_size=15)


def test_bad_projector_input_raises(projector):
    with pytest.raises(ValueError, match=r"images must be B x 3 x H x W"):
        encode_images(projector, torch.zeros(2, 4, 16, 16))
    with pytest.raises(TypeError, match="VQModel or AutoencoderKL"):
        encode_images(torch.nn.Identity(), images())


def test_nearest_codes_match_the_vq_models_own_quantisation():
    """The codes a categorical head is trained on are the ones decoding quantises the latent to, after the
    normalisation (scale and shift) moved latents and codebook alike."""
    from diffusers_lmd.projector import nearest_codes, vq_codebook

    vae = tiny_vq()
    set_latent_stats(vae, 2.5, -0.3)
    x = images()
    codes = nearest_codes(encode_images(vae, x), vq_codebook(vae))
    expected = vae.quantize(raw_latents(vae, x))[2][2].view(codes.shape)
    assert codes.dtype == torch.long and torch.equal(codes, expected)
    # the codebook's normalised latents decode to the images of the quantised latents
    quantised = vq_codebook(vae)[codes].permute(0, 3, 1, 2)
    assert torch.allclose(decode_latents(vae, quantised), vae.decode(raw_latents(vae, x)).sample, atol=1e-5)


def test_a_codebook_needs_a_vq_projector_and_matching_channels():
    from diffusers_lmd.projector import nearest_codes, vq_codebook

    with pytest.raises(ValueError, match="VQModel"):
        vq_codebook(tiny_kl())
    with pytest.raises(ValueError, match="latents must be"):
        nearest_codes(torch.zeros(1, 3, 4, 4), vq_codebook(tiny_vq()))
