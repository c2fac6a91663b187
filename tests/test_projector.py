"""Projector helpers over tiny random diffusers VQModel and AutoencoderKL (method.md §2, issue 2 item 4)."""

import pytest
import torch
from conftest import TINY_PROJECTOR
from diffusers import AutoencoderKL, VQModel

from diffusers_lmd import LMDModel, projector


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
def vae(request):
    return tiny_vq() if request.param == "vq" else tiny_kl()


def test_encode_and_decode_shapes(vae):
    assert projector.latent_channels(vae) == 4
    assert projector.downsample_factor(vae) == 2
    latents = projector.encode_images(vae, images())
    assert latents.shape == (2, 4, 8, 12)
    assert not latents.requires_grad
    assert projector.decode_latents(vae, latents).shape == (2, 3, 16, 24)


@torch.no_grad()
def test_vq_normalisation_uses_the_config_scaling_factor():
    vq = tiny_vq(scaling_factor=2.5)
    x = images()
    torch.testing.assert_close(projector.encode_images(vq, x), raw_latents(vq, x) * 2.5)
    # decode undoes the scale, then the VQModel quantises
    z = raw_latents(vq, x)
    torch.testing.assert_close(projector.decode_latents(vq, z * 2.5), vq.decode(z).sample, rtol=1e-4, atol=1e-5)


@torch.no_grad()
def test_kl_normalisation_uses_scaling_and_shift_factor():
    kl = tiny_kl(scaling_factor=3.0, shift_factor=0.4)
    x = images()
    z = raw_latents(kl, x)
    normalised = projector.encode_images(kl, x)
    torch.testing.assert_close(normalised, (z - 0.4) * 3.0)
    torch.testing.assert_close(projector.decode_latents(kl, normalised), kl.decode(z).sample, rtol=1e-4, atol=1e-4)


def test_kl_without_shift_factor_is_scale_only():
    kl = tiny_kl(scaling_factor=2.0)
    assert kl.config.shift_factor is None
    x = images()
    with torch.no_grad():
        torch.testing.assert_close(projector.encode_images(kl, x), raw_latents(kl, x) * 2.0)


def test_estimated_stats_give_unit_variance_latents(vae):
    batches = [images(4, 16, 16, seed=s) for s in range(3)]
    scale, shift = projector.estimate_latent_stats(vae, batches)
    assert scale > 0
    projector.set_latent_stats(vae, scale, shift)
    assert vae.config.scaling_factor == pytest.approx(scale)
    latents = torch.cat([projector.encode_images(vae, b) for b in batches])
    assert latents.var(unbiased=False).item() == pytest.approx(1.0, rel=1e-3)
    assert vae.config.shift_factor == pytest.approx(shift)  # a VQModel keeps its shift too (method.md §2)
    assert latents.mean().item() == pytest.approx(0.0, abs=1e-3)


def test_vq_latent_shift_survives_save_and_load_without_a_warning(tmp_path, caplog):
    vq = tiny_vq()
    x = images()
    raw = raw_latents(vq, x)
    projector.set_latent_stats(vq, 2.0, 0.6)
    vq.save_pretrained(tmp_path / "vq")
    loaded = VQModel.from_pretrained(tmp_path / "vq")
    assert loaded.config.shift_factor == pytest.approx(0.6) and loaded.config.scaling_factor == pytest.approx(2.0)
    assert "shift_factor" not in caplog.text  # diffusers' "will be ignored" is wrong for this key
    vq.register_to_config(not_a_vq_option=1)  # any other unexpected key still gets diffusers' warning
    vq.save_pretrained(tmp_path / "other")
    VQModel.from_pretrained(tmp_path / "other")
    assert "not_a_vq_option" in caplog.text
    normalised = projector.encode_images(loaded, x)
    torch.testing.assert_close(normalised, (raw - 0.6) * 2.0)
    torch.testing.assert_close(
        projector.decode_latents(loaded, normalised), vq.decode(raw).sample, rtol=1e-4, atol=1e-4
    )
    with pytest.raises(ValueError, match="scaling_factor must be positive"):
        projector.set_latent_stats(vq, 0.0, 0.0)


def test_estimate_latent_stats_reads_dataloader_dicts_and_stops_at_max_batches():
    kl = tiny_kl()
    batches = [{"pixel_values": images(2, 16, 16, seed=s)} for s in range(4)]
    first_two = projector.estimate_latent_stats(kl, batches[:2])
    assert projector.estimate_latent_stats(kl, batches, max_batches=2) == pytest.approx(first_two)
    assert projector.estimate_latent_stats(kl, batches) != pytest.approx(first_two)
    # a DataLoader over a TensorDataset yields (images,) tuples
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.cat([images(2, 16, 16, 0), images(2, 16, 16, 1)])), batch_size=2
    )
    assert projector.estimate_latent_stats(kl, loader) == pytest.approx(first_two)
    with pytest.raises(ValueError, match="no images"):
        projector.estimate_latent_stats(kl, [])


def test_check_compatible(vae):
    model = LMDModel.from_preset("tiny", sample_size=8, in_channels=4, patch_size=2)
    projector.check_compatible(vae, model, image_size=16)
    projector.check_compatible(vae, model, image_size=(16, 24))
    with pytest.raises(ValueError, match="4-channel latents but the LMDModel expects in_channels=3"):
        projector.check_compatible(vae, LMDModel.from_preset("tiny", sample_size=8, in_channels=3))
    with pytest.raises(ValueError, match="not divisible by patch_size=4"):
        projector.check_compatible(vae, LMDModel.from_preset("tiny", sample_size=8, patch_size=4), image_size=(16, 12))
    with pytest.raises(ValueError, match="downsampling factor 2"):
        projector.check_compatible(vae, model, image_size=15)


def test_bad_projector_input_raises(vae):
    with pytest.raises(ValueError, match=r"images must be B x 3 x H x W"):
        projector.encode_images(vae, torch.zeros(2, 4, 16, 16))
    with pytest.raises(TypeError, match="VQModel or AutoencoderKL"):
        projector.encode_images(torch.nn.Identity(), images())


def test_nearest_codes_match_the_vq_models_own_quantisation():
    """The codes a categorical head is trained on are the ones decoding quantises the latent to, after the
    normalisation (scale and shift) moved latents and codebook alike."""
    vae = tiny_vq()
    projector.set_latent_stats(vae, 2.5, -0.3)
    x = images()
    codes = projector.nearest_codes(projector.encode_images(vae, x), projector.vq_codebook(vae))
    expected = vae.quantize(raw_latents(vae, x))[2][2].view(codes.shape)
    assert codes.dtype == torch.long and torch.equal(codes, expected)
    # the codebook's normalised latents decode to the images of the quantised latents
    quantised = projector.vq_codebook(vae)[codes].permute(0, 3, 1, 2)
    assert torch.allclose(projector.decode_latents(vae, quantised), vae.decode(raw_latents(vae, x)).sample, atol=1e-5)


def test_a_codebook_needs_a_vq_projector_and_matching_channels():
    with pytest.raises(ValueError, match="VQModel"):
        projector.vq_codebook(tiny_kl())
    with pytest.raises(ValueError, match="latents must be"):
        projector.nearest_codes(torch.zeros(1, 3, 4, 4), projector.vq_codebook(tiny_vq()))
