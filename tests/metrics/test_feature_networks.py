"""The FID / KID feature networks on tiny random DINOv2 and CLIP models saved to a temporary folder (no download),
the project's Fashion-MNIST classifier, and KID against hand-computed values."""

import importlib.util
from pathlib import Path

import pytest
import torch
from testing_utils import TINY_VIT, image_processor_class, tiny_dinov2_folder
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, OPENAI_CLIP_MEAN

from diffusers_lmd.metrics import (
    FEATURE_NETWORKS,
    FeatureNetwork,
    GaussianStats,
    frechet_distance,
    kernel_distance,
    load_feature_network,
    score_features,
)

REPO = Path(__file__).resolve().parents[2]


def tiny_clip_folder(path: Path, side: int = 16) -> str:
    """A random 1-block CLIP vision tower with an 8-D projection and its image processor (CLIP's mean / std)."""
    torch.manual_seed(0)
    config = CLIPVisionConfig(image_size=side, projection_dim=8, **TINY_VIT)
    CLIPVisionModelWithProjection(config).save_pretrained(path)
    image_processor_class("CLIPImageProcessor")(
        size={"shortest_edge": side}, crop_size={"height": side, "width": side}
    ).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def dinov2_dir(tmp_path_factory) -> str:
    return tiny_dinov2_folder(tmp_path_factory.mktemp("dinov2"))


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory) -> str:
    return tiny_clip_folder(tmp_path_factory.mktemp("clip"))


def _images(n: int, side: int = 16, seed: int = 0, shift: float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 3, side, side, generator=g) * 1.4 - 0.7 + shift).clamp(-1, 1)


def test_dinov2_gives_its_cls_features_with_its_processor_settings(dinov2_dir):
    network = load_feature_network("dinov2", dinov2_dir)
    assert isinstance(network, FeatureNetwork) and not network.training
    assert (network.name, network.path, network.input_size) == ("dinov2", dinov2_dir, 16)
    assert network.mean.flatten().tolist() == pytest.approx(IMAGENET_DEFAULT_MEAN)
    features = network(_images(5))
    assert features.shape == (5, 16) and features.dtype == torch.float32
    # the pooled output: the layer-normed CLS token of the model itself
    pixels = (((_images(5) + 1) / 2) - network.mean) / network.std
    assert torch.allclose(features, network.model(pixel_values=pixels).pooler_output, atol=1e-5)


def test_clip_gives_its_projected_image_embeddings(clip_dir):
    network = load_feature_network("clip", clip_dir)
    assert network.mean.flatten().tolist() == pytest.approx(OPENAI_CLIP_MEAN)
    assert network(_images(3)).shape == (3, 8)


def test_images_of_another_size_are_resized_to_the_network_input(dinov2_dir):
    network = load_feature_network("dinov2", dinov2_dir)
    big = _images(2, side=40)
    resized = torch.nn.functional.interpolate(big, size=(16, 16), mode="bicubic", antialias=True)
    assert network(big).shape == (2, 16)
    assert torch.allclose(network(big), network(resized), atol=1e-5)  # bicubic, antialiased, as PIL resizes


def test_a_folder_of_any_vision_model_is_a_named_network(dinov2_dir, clip_dir):
    network = load_feature_network(dinov2_dir)
    assert (network.name, network.path) == ("custom", dinov2_dir)
    assert network(_images(2)).shape == (2, 16)
    assert "NOT comparable with Inception FID" in network.describe() and dinov2_dir in network.describe()
    assert load_feature_network(clip_dir)(_images(2)).shape == (2, 16)  # AutoModel: CLIP's pooled vision output


def test_without_a_processor_config_the_model_size_and_imagenet_statistics_are_used(tmp_path):
    folder = tiny_dinov2_folder(tmp_path, side=8, with_processor=False)
    network = load_feature_network("dinov2", folder)
    assert network.input_size == 8
    assert network.std.flatten().tolist() == pytest.approx(IMAGENET_DEFAULT_STD)


def test_the_project_classifier_is_a_feature_network():
    path = str(REPO / "assets" / "fashion-mnist-classifier")
    network = load_feature_network("fashion-mnist-classifier", path)
    assert (network.input_size, network.pad_to_resolution) == (32, True)
    assert network(_images(2, side=32)).shape == (2, 128)
    assert "docs/method.md §9" in network.describe()


def test_registry_names_and_bad_names():
    assert set(FEATURE_NETWORKS) == {"inception", "dinov2", "clip", "fashion-mnist-classifier"}
    with pytest.raises(ValueError, match="--feature_network 'resnet'"):
        load_feature_network("resnet")


def test_a_folder_network_takes_no_second_path(dinov2_dir):
    with pytest.raises(ValueError, match="drop --feature_network_path"):
        load_feature_network(dinov2_dir, dinov2_dir)


def test_missing_weights_name_the_path_flag(tmp_path):
    with pytest.raises(ValueError, match="--feature_network_path"):
        load_feature_network("dinov2", str(tmp_path))
    with pytest.raises(ValueError, match="--feature_network_path .* is not a file"):
        load_feature_network("inception", str(tmp_path / "weights.pth"))


@pytest.mark.skipif(importlib.util.find_spec("torchmetrics") is not None, reason="torchmetrics is installed")
def test_inception_without_its_packages_says_what_to_install(tmp_path):
    weights = tmp_path / "weights.pth"
    weights.write_bytes(b"")
    with pytest.raises(ImportError, match=r"torchmetrics\[image\].*torchvision.*dinov2"):
        load_feature_network("inception", str(weights))


def test_fid_of_a_set_with_itself_is_zero_and_grows_with_a_shift(dinov2_dir):
    network = load_feature_network("dinov2", dinov2_dir)
    real = network(_images(40))
    assert frechet_distance(GaussianStats.from_features(real), GaussianStats.from_features(real)) < 1e-6
    near = score_features(real, network(_images(40, seed=1)), kid_subset_size=20)
    far = score_features(real, network(_images(40, seed=1, shift=0.5)), kid_subset_size=20)
    assert 0 < near["fid"] < far["fid"]
    assert near["kid_mean"] < far["kid_mean"] and far["kid_mean"] > 0
    assert far["kid_subset_size"] == 20


def test_kid_matches_a_hand_computed_value():
    # k(x, y) = (x.y / 2 + 1)^3. Within each set the two rows are orthogonal: k = 1, so each within-set mean is 1.
    # Across: a0.b0 = a1.b0 = 1 -> 1.5^3 = 3.375, a0.b1 = a1.b1 = 0 -> 1; mean 2.1875. MMD^2 = 1 + 1 - 2 * 2.1875.
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    mean, std = kernel_distance(a, b, subset_size=2, num_subsets=3)
    assert mean == pytest.approx(-2.375) and std == pytest.approx(0.0)


def test_kid_on_whole_sets_matches_the_textbook_sums():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(7, 3, generator=g), torch.randn(7, 3, generator=g) + 0.5

    def k(p, q):
        return (float(p @ q) / 3 + 1) ** 3

    m = 7
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / m**2
    mean, std = kernel_distance(x, y, subset_size=m, num_subsets=2)
    assert mean == pytest.approx(xx + yy - 2 * xy, rel=1e-6) and std == pytest.approx(0.0, abs=1e-9)
    _, spread = kernel_distance(x, y, subset_size=4, num_subsets=10)
    assert spread > 0  # different subsets, different estimates


def test_kid_refuses_subsets_larger_than_the_sets():
    with pytest.raises(ValueError, match="subset_size"):
        kernel_distance(torch.randn(5, 3), torch.randn(4, 3), subset_size=5)
