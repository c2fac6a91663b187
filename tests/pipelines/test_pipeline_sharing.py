"""Sharing a pipeline (issue 20 items 1-3, 8): ``save_pretrained`` / ``push_to_hub`` carry ``lmd_pipeline.py`` and a
model card, ``model_index.json`` names the file so plain ``DiffusionPipeline.from_pretrained`` loads the folder, the
card says how to install what exists, and its ``pipeline_tag`` fits the model."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from huggingface_hub import ModelCard
from testing_utils import SAMPLE, sample

from diffusers_lmd import LMDInpaintPipeline, LMDModel, LMDPipeline
from diffusers_lmd.pipelines import hub_utils
from diffusers_lmd.pipelines.hub_utils import HUB_PIPELINE_FILE, card_pipeline_tag, hub_pipeline_file


def card_snippet(folder: Path) -> str:
    """The Python block of the folder's model card."""
    return re.search(r"```python\n(.*?)```", (folder / "README.md").read_text(), re.S).group(1)


def transformer_pipe(make_pipeline_components, **config) -> LMDPipeline:
    transformer = LMDModel.from_preset("tiny", sample_size=8, in_channels=4, patch_size=2, **config)
    return LMDPipeline(**{**make_pipeline_components(), "transformer": transformer.eval()})


@pytest.mark.parametrize("cls", [LMDPipeline, LMDInpaintPipeline])
def test_save_pretrained_writes_the_hub_file_its_class_name_and_a_card(make_pipeline, tmp_path, cls):
    make_pipeline(cls).save_pretrained(tmp_path / "pipe")
    folder = tmp_path / "pipe"
    assert (folder / HUB_PIPELINE_FILE).read_text() == hub_pipeline_file().read_text()
    assert json.loads((folder / "model_index.json").read_text())["_class_name"] == ["lmd_pipeline", "LMDPipeline"]
    card = ModelCard.load(folder / "README.md")
    assert card.data.library_name == "diffusers" and "diffusers-lmd" in card.data.tags
    assert card.data.pipeline_tag == "image-to-image"  # unconditional, MSE head: a reconstruction model
    assert 'DiffusionPipeline.from_pretrained("pipe"' in card.text
    assert isinstance(cls.from_pretrained(folder), cls)  # the Hub file's name is read back as the class's own


def test_a_card_already_in_the_folder_is_kept(make_pipeline, tmp_path):
    (tmp_path / "README.md").write_text("my card\n")
    make_pipeline().save_pretrained(tmp_path)
    assert (tmp_path / "README.md").read_text() == "my card\n"


def test_the_card_and_the_hub_file_say_how_to_install_what_exists(make_pipeline, tmp_path):
    make_pipeline().save_pretrained(tmp_path)
    for text in (card_snippet(tmp_path), hub_pipeline_file().read_text()):
        assert "pip install diffusers-lmd" not in text
        assert "no package index" in text and "pip install ." in text and "pip wheel --no-deps -w dist ." in text


@pytest.mark.parametrize(
    "config, tag",
    [
        ({}, "image-to-image"),
        ({"head_type": "diffusion"}, "unconditional-image-generation"),
        ({"num_class_embeds": 3}, "unconditional-image-generation"),
        ({"cross_attention_dim": 16}, "text-to-image"),
    ],
)
def test_pipeline_tag_fits_the_model(make_pipeline_components, tmp_path, config, tag):
    hub_utils.write_pipeline_card(tmp_path, transformer_pipe(make_pipeline_components, **config))
    card = ModelCard.load(tmp_path / "README.md")
    assert card.data.pipeline_tag == tag
    assert ("class-conditional" in card.data.tags) == ("num_class_embeds" in config)
    assert ("class_labels=0, num_images_per_prompt=4" in card.text) == ("num_class_embeds" in config)
    classes, text = "num_class_embeds" in config, "cross_attention_dim" in config
    assert card_pipeline_tag(classes, text, config.get("head_type") == "diffusion") == tag


@pytest.fixture
def fake_hub(monkeypatch):
    """``create_repo`` / ``file_exists`` / ``upload_folder`` of the pipeline's Hub side, recording each upload's files,
    ``model_index.json`` and card; ``hub["has_card"]`` says whether the repository already has a README."""
    hub: dict = {"uploads": [], "has_card": False}

    def create_repo(repo_id, **kwargs):
        return type("Repo", (), {"repo_id": repo_id})()

    def upload_folder(repo_id, folder_path, ignore_patterns=None, **kwargs):
        folder = Path(folder_path)
        files = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}
        index = json.loads((folder / "model_index.json").read_text())
        card = (folder / "README.md").read_text() if (folder / "README.md").is_file() else None
        hub["uploads"].append(dict(repo_id=repo_id, files=files, index=index, card=card, ignore=ignore_patterns))
        return f"https://huggingface.co/{repo_id}/commit/0"

    monkeypatch.setattr(hub_utils, "create_repo", create_repo)
    monkeypatch.setattr(hub_utils, "file_exists", lambda repo_id, filename, **kwargs: hub["has_card"])
    monkeypatch.setattr(hub_utils, "upload_folder", upload_folder)
    return hub


def test_push_to_hub_uploads_the_hub_file_and_card(make_pipeline, tmp_path, fake_hub):
    pipe = make_pipeline()
    assert pipe.push_to_hub("user/lmd-model").endswith("/commit/0")
    pipe.save_pretrained(tmp_path / "local", push_to_hub=True, repo_id="user/other")
    fake_hub["has_card"] = True
    pipe.push_to_hub("user/lmd-model")
    first, second, third = fake_hub["uploads"]
    for upload in (first, second):
        assert {HUB_PIPELINE_FILE, "README.md", "model_index.json", "transformer/config.json"} <= upload["files"]
        assert upload["index"]["_class_name"] == ["lmd_pipeline", "LMDPipeline"] and upload["ignore"] is None
        assert f'from_pretrained("{upload["repo_id"]}"' in upload["card"]
    assert second["repo_id"] == "user/other" and (tmp_path / "local" / HUB_PIPELINE_FILE).is_file()
    assert third["ignore"] == ["README.md"]  # the repository's own card is kept, as diffusers keeps it


@pytest.mark.slow
def test_saved_folder_reloads_through_diffusers_lmd_and_the_card(make_pipeline, tmp_path):
    """Offline, in a fresh process: plain DiffusionPipeline with trust_remote_code, the card's own snippet, and
    LMDPipeline.from_pretrained give the same images; a folder saved before the class-name pair still loads."""
    pipe = make_pipeline()
    pipe.save_pretrained(tmp_path / "pipe")
    old = tmp_path / "old"
    pipe.save_pretrained(old)
    index = json.loads((old / "model_index.json").read_text())
    (old / "model_index.json").write_text(json.dumps({**index, "_class_name": "LMDPipeline"}))
    code = SAMPLE + textwrap.dedent(
        """
        import sys
        from PIL import Image
        from diffusers import DiffusionPipeline

        snippet, old_snippet, out = sys.argv[1:4]
        plain = DiffusionPipeline.from_pretrained("pipe", trust_remote_code=True)
        assert type(plain).__module__.endswith("lmd_pipeline"), type(plain)
        outputs = [sample(plain)]
        for code in (snippet, old_snippet):
            namespace = {"image": Image.new("RGB", (16, 16))}
            exec(code, namespace)
            outputs.append(sample(namespace["pipe"]))
        from diffusers_lmd import LMDPipeline

        outputs += [sample(LMDPipeline.from_pretrained("pipe")), sample(LMDPipeline.from_pretrained("old"))]
        np.save(out, np.stack(outputs))
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    args = [card_snippet(tmp_path / "pipe"), card_snippet(tmp_path / "pipe").replace('"pipe"', '"old"')]
    done = subprocess.run(
        [sys.executable, "-c", code, *args, str(tmp_path / "out.npy")],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    outputs = np.load(tmp_path / "out.npy")
    assert len(outputs) == 5 and all(np.array_equal(outputs[0], o) for o in outputs[1:])
    np.testing.assert_allclose(outputs[0], sample(pipe), atol=1e-5, rtol=0)  # same weights, saved and reloaded
