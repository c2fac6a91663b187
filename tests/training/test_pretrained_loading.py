"""Pretrained models from local folders and Hub repositories (issue 14 item 2), offline.

Hub repositories are hand-built Hub cache folders (``models--user--name/{refs,snapshots}``) read in offline mode
through ``--cache_dir``: the same ``hf_hub_download`` / ``from_pretrained`` code paths a download goes through,
without a network.
"""

from __future__ import annotations

import pytest
import torch
from diffusers import AutoencoderKL, VQModel
from testing_utils import hub_repo, same_weights

from diffusers_lmd import LMDModel
from diffusers_lmd.classification import load_classifier_for_finetuning
from diffusers_lmd.models.lmd_classifier import LMDForImageClassification
from diffusers_lmd.pipelines import LMDPipeline
from diffusers_lmd.training import pretrained
from diffusers_lmd.training.pretrained import load_pretrained_projector, resolve_pretrained

LABELS = ["cat", "dog", "fish"]


def test_local_pipeline_is_detected_and_its_vae_is_the_projector(make_pipeline_components, tmp_path):
    parts = make_pipeline_components("kl")
    LMDPipeline(**parts).save_pretrained(tmp_path / "lmd")
    source = resolve_pretrained(tmp_path / "lmd")
    assert source.is_local and source.is_pipeline and source.components(["AutoencoderKL"]) == ["vae"]
    vae = load_pretrained_projector(source)
    assert isinstance(vae, AutoencoderKL) and same_weights(vae, parts["vae"]) and not vae.training
    assert not any(p.requires_grad for p in vae.parameters())


def test_hub_pipeline_repo_is_detected_by_its_model_index(make_pipeline_components, tmp_path, offline):
    parts = make_pipeline_components("vq")
    LMDPipeline(**parts).save_pretrained(hub_repo(tmp_path / "hub", "user/lmd"))
    source = resolve_pretrained("user/lmd", cache_dir=tmp_path / "hub")
    assert not source.is_local and source.is_pipeline
    assert source.model_index["_class_name"] == ["lmd_pipeline", "LMDPipeline"]  # the file diffusers resolves
    vae = load_pretrained_projector(source)  # no --projector_subfolder vae needed
    assert isinstance(vae, VQModel) and same_weights(vae, parts["vae"])


def test_a_hub_projector_repo_loads_at_the_asked_revision(make_pipeline_components, tmp_path, offline):
    cache = tmp_path / "hub"
    old, new = (make_pipeline_components("kl", seed=s)["vae"] for s in (1, 2))
    old.save_pretrained(hub_repo(cache, "someone/sd-vae-ft-mse", "v1"))
    new.save_pretrained(hub_repo(cache, "someone/sd-vae-ft-mse", "main"))
    latest = load_pretrained_projector(resolve_pretrained("someone/sd-vae-ft-mse", cache_dir=cache))
    pinned = load_pretrained_projector(resolve_pretrained("someone/sd-vae-ft-mse", revision="v1", cache_dir=cache))
    assert same_weights(latest, new) and same_weights(pinned, old) and not same_weights(pinned, new)


def test_variant_weights(make_pipeline_components, tmp_path, offline):
    vae = make_pipeline_components("kl")["vae"]
    vae.save_pretrained(hub_repo(tmp_path / "hub", "user/vae"), variant="fp16")
    loaded = load_pretrained_projector(resolve_pretrained("user/vae", variant="fp16", cache_dir=tmp_path / "hub"))
    assert same_weights(loaded, vae)
    with pytest.raises(ValueError, match=r"variant 'bf16'.*Without --variant"):
        load_pretrained_projector(resolve_pretrained("user/vae", variant="bf16", cache_dir=tmp_path / "hub"))


def test_a_local_folder_with_only_bin_weights_is_refused_saying_so(make_pipeline_components, tmp_path):
    make_pipeline_components("kl")["vae"].save_pretrained(tmp_path / "vae", safe_serialization=False)
    assert (tmp_path / "vae" / "diffusion_pytorch_model.bin").is_file()
    with pytest.raises(ValueError, match=r"only pickled weights \(diffusion_pytorch_model\.bin\).*safetensors"):
        load_pretrained_projector(resolve_pretrained(tmp_path / "vae", flag="--projector_path"))


def test_a_hub_repo_with_only_bin_weights_is_refused_saying_so(
    make_pipeline_components, tmp_path, offline, monkeypatch
):
    snapshot = hub_repo(tmp_path / "hub", "user/old-pipeline")
    parts = make_pipeline_components("kl")
    LMDPipeline(**parts).save_pretrained(snapshot, safe_serialization=False)
    listing = sorted(p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file())
    assert "vae/diffusion_pytorch_model.bin" in listing and not any(f.endswith(".safetensors") for f in listing)
    source = resolve_pretrained("user/old-pipeline", cache_dir=tmp_path / "hub")
    with pytest.raises(ValueError, match=r"--projector_path .*subfolder 'vae'.* the AutoencoderKL did not load"):
        load_pretrained_projector(source)  # offline, the Hub cannot list the files: the load error itself

    calls = []

    def list_repo_files(repo_id, revision=None, token=None):  # the Hub's answer, as huggingface_hub returns it
        calls.append((repo_id, revision))
        return listing

    monkeypatch.setattr(pretrained, "list_repo_files", list_repo_files)
    with pytest.raises(ValueError, match=r"only pickled weights \(diffusion_pytorch_model\.bin\).*unpickling"):
        load_pretrained_projector(source)
    assert calls == [("user/old-pipeline", None)]


def test_bad_paths_name_the_flag_and_the_problem(tmp_path, offline):
    with pytest.raises(ValueError, match=r"--projector_path .* neither an existing local folder nor a Hub"):
        resolve_pretrained(str(tmp_path / "no" / "such" / "folder"), flag="--projector_path")
    with pytest.raises(ValueError, match="has no subfolder 'vae'"):
        resolve_pretrained(tmp_path, subfolder="vae")
    not_cached = resolve_pretrained("user/never-downloaded", cache_dir=tmp_path / "hub")
    assert not not_cached.is_pipeline
    with pytest.raises(ValueError, match=r"'user/never-downloaded': no model config could be read"):
        load_pretrained_projector(not_cached)


def test_a_model_that_is_not_a_projector_says_what_is_expected(tmp_path):
    LMDModel.from_preset("tiny", sample_size=8, in_channels=4, patch_size=2).save_pretrained(tmp_path / "m")
    with pytest.raises(ValueError, match=r"holds a 'LMDModel', not a VQModel or AutoencoderKL.*--projector_subfolder"):
        load_pretrained_projector(resolve_pretrained(tmp_path / "m"))


def test_classifier_from_a_hub_pipeline_repo_as_train_lmd_pushes_it(make_pipeline_components, tmp_path, offline):
    parts = make_pipeline_components("vq")
    LMDPipeline(**parts).save_pretrained(hub_repo(tmp_path / "hub", "user/lmd-model", "v2"))
    model = load_classifier_for_finetuning(
        "user/lmd-model", LABELS, revision="v2", cache_dir=tmp_path / "hub", pooling="cls"
    )
    assert isinstance(model, LMDForImageClassification) and model.config.num_labels == 3
    assert model.config.pooling == "cls" and model.config.label_names == LABELS
    assert same_weights(model.projector, parts["vae"])
    encoder = parts["transformer"].state_dict()
    assert all(torch.equal(v, encoder[k]) for k, v in model.encoder.state_dict().items())
    with pytest.raises(ValueError, match="no model config could be read"):  # main has no snapshot in this cache
        load_classifier_for_finetuning("user/lmd-model", LABELS, cache_dir=tmp_path / "hub")


def test_classifier_from_an_lmd_model_repo_with_a_projector_from_another(make_pipeline_components, tmp_path, offline):
    cache = tmp_path / "hub"
    parts = make_pipeline_components("kl")
    parts["transformer"].save_pretrained(hub_repo(cache, "user/encoder"))
    LMDPipeline(**parts).save_pretrained(hub_repo(cache, "user/pipeline"))  # a pipeline as --projector_path: its vae
    model = load_classifier_for_finetuning("user/encoder", LABELS, projector_path="user/pipeline", cache_dir=cache)
    assert same_weights(model.projector, parts["vae"])
    assert load_classifier_for_finetuning("user/encoder", LABELS, cache_dir=cache).projector is None  # latents only


def test_a_saved_classifier_reloads_and_checks_its_head(make_pipeline_components, tmp_path):
    parts = make_pipeline_components("vq")
    classifier = LMDForImageClassification.from_lmd_model(parts["transformer"], 3, projector=parts["vae"])
    classifier.save_pretrained(tmp_path / "clf")
    assert same_weights(load_classifier_for_finetuning(tmp_path / "clf", LABELS), classifier)
    with pytest.raises(ValueError, match="classifies 3 classes but the dataset has 2"):
        load_classifier_for_finetuning(tmp_path / "clf", LABELS[:2])
    with pytest.raises(ValueError, match="a classifier embeds its projector"):
        load_classifier_for_finetuning(tmp_path / "clf", LABELS, projector_path=str(tmp_path / "clf"))
