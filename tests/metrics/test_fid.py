"""The generation metrics on synthetic features with known answers: Fréchet distance, precision / recall,
conditional accuracy, and the feature classifier's interface (no real data, no trained weights)."""

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from diffusers_lmd.metrics import (
    FID_NAME,
    FeatureClassifier,
    GaussianStats,
    GenerationScorer,
    conditional_accuracy,
    density_coverage,
    frechet_distance,
    precision_recall,
)


def _stats(mean, cov) -> GaussianStats:
    return GaussianStats(torch.tensor(mean, dtype=torch.float64), torch.tensor(cov, dtype=torch.float64), 100)


def _random_cov(d: int, seed: int, rank: int | None = None) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, rank or d, generator=g, dtype=torch.float64)
    return a @ a.T / (rank or d)


def _scipy_fid(a: GaussianStats, b: GaussianStats) -> float:
    """The textbook formula with scipy's general matrix square root (the reference implementation)."""
    root = scipy.linalg.sqrtm(a.cov.numpy() @ b.cov.numpy())
    diff = (a.mean - b.mean).numpy()
    return float(diff @ diff + np.trace(a.cov.numpy()) + np.trace(b.cov.numpy()) - 2 * np.trace(root).real)


def test_identical_gaussians_are_at_distance_zero():
    cov = _random_cov(16, 0)
    stats = GaussianStats(torch.zeros(16, dtype=torch.float64), cov, 50)
    assert frechet_distance(stats, stats) == pytest.approx(0.0, abs=1e-9)


def test_diagonal_gaussians_match_the_closed_form():
    # Commuting (diagonal) covariances: |mu_a - mu_b|^2 + sum_i (sqrt(a_i) - sqrt(b_i))^2
    # = (1 + 4) + ((1 - 2)^2 + (3 - 1)^2) = 5 + 5 = 10.
    a = _stats([0.0, 0.0], [[1.0, 0.0], [0.0, 9.0]])
    b = _stats([1.0, 2.0], [[4.0, 0.0], [0.0, 1.0]])
    assert frechet_distance(a, b) == pytest.approx(10.0, abs=1e-9)
    assert frechet_distance(b, a) == pytest.approx(10.0, abs=1e-9)


def test_one_dimensional_gaussians():
    # N(0, 1) vs N(3, 4): 3^2 + (1 - 2)^2 = 10.
    assert frechet_distance(_stats([0.0], [[1.0]]), _stats([3.0], [[4.0]])) == pytest.approx(10.0)


def test_full_covariances_match_scipy_sqrtm():
    a = GaussianStats(torch.linspace(-1, 1, 12, dtype=torch.float64), _random_cov(12, 1), 100)
    b = GaussianStats(torch.zeros(12, dtype=torch.float64), _random_cov(12, 2), 100)
    assert frechet_distance(a, b) == pytest.approx(_scipy_fid(a, b), rel=1e-7)
    assert frechet_distance(a, b) == pytest.approx(frechet_distance(b, a), rel=1e-7)


def test_singular_covariances_stay_real_and_match_scipy():
    # Rank 3 in 10 dimensions (fewer samples than features): the eigen route stays real and non-negative.
    a = GaussianStats(torch.zeros(10, dtype=torch.float64), _random_cov(10, 3, rank=3), 4)
    b = GaussianStats(torch.ones(10, dtype=torch.float64), _random_cov(10, 4, rank=3), 4)
    value = frechet_distance(a, b)
    assert math.isfinite(value) and value > 0
    assert value == pytest.approx(_scipy_fid(a, b), rel=1e-5)


def test_stats_from_samples_of_a_known_gaussian():
    g = torch.Generator().manual_seed(0)
    features = torch.randn(20000, 4, generator=g) * torch.tensor([1.0, 2.0, 0.5, 1.0]) + torch.tensor([1.0, 0, 0, 0])
    stats = GaussianStats.from_features(features)
    assert torch.allclose(stats.mean, torch.tensor([1.0, 0, 0, 0], dtype=torch.float64), atol=0.05)
    assert torch.allclose(stats.cov.diagonal(), torch.tensor([1.0, 4.0, 0.25, 1.0], dtype=torch.float64), rtol=0.05)
    truth = _stats([1.0, 0, 0, 0], torch.diag(torch.tensor([1.0, 4.0, 0.25, 1.0])).tolist())
    assert frechet_distance(stats, truth) < 0.01
    # A mean shifted by 1 in one coordinate costs 1.
    shifted = GaussianStats.from_features(features + torch.tensor([0.0, 1.0, 0, 0]))
    assert frechet_distance(shifted, truth) == pytest.approx(1.0, abs=0.05)


def test_frechet_distance_rejects_bad_input():
    with pytest.raises(TypeError, match="GaussianStats"):
        frechet_distance(torch.zeros(2), _stats([0.0], [[1.0]]))
    with pytest.raises(ValueError, match="dimensions"):
        frechet_distance(_stats([0.0], [[1.0]]), _stats([0.0, 0.0], [[1.0, 0.0], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="N >= 2"):
        GaussianStats.from_features(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="non-finite"):
        GaussianStats.from_features(torch.tensor([[0.0, float("nan")], [1.0, 1.0]]))


def test_precision_recall_separates_fidelity_from_diversity():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [20.0, 0.0]])
    real = torch.randn(400, 2, generator=g) + centres.repeat(200, 1)  # two modes, 200 points each
    same = torch.randn(400, 2, generator=g) + centres.repeat(200, 1)
    precision, recall = precision_recall(real, same)
    assert precision > 0.9 and recall > 0.9
    # Mode collapse: every fake point on one real mode -> faithful (precision ~1) but half the real data missed.
    collapsed = torch.randn(400, 2, generator=g) + centres[0]
    precision, recall = precision_recall(real, collapsed)
    assert precision > 0.9 and 0.4 < recall < 0.6
    # Far off the real data: neither.
    assert precision_recall(real, collapsed + 100.0) == (0.0, 0.0)
    with pytest.raises(ValueError, match="width"):
        precision_recall(real, torch.zeros(10, 3))


def test_coverage_is_not_inflated_by_outlying_samples_as_recall_is():
    g = torch.Generator().manual_seed(0)
    real = torch.randn(400, 2, generator=g)
    density, coverage = density_coverage(real, torch.randn(400, 2, generator=g))
    assert coverage > 0.9 and 0.7 < density < 1.3
    # Collapsed onto a small core of the real data, plus a few samples far off it: the outliers' large k-NN balls
    # cover much of the real data, so recall looks good; coverage reads the collapse.
    collapsed = torch.cat([0.1 * torch.randn(390, 2, generator=g), 6 * torch.randn(10, 2, generator=g)])
    _, recall = precision_recall(real, collapsed)
    _, coverage = density_coverage(real, collapsed)
    assert recall > 0.9 and coverage < 0.2
    assert density_coverage(real, real + 100.0) == (0.0, 0.0)
    with pytest.raises(ValueError, match="width"):
        density_coverage(real, torch.zeros(10, 3))
    with pytest.raises(ValueError, match="k must be"):
        density_coverage(real, real, k=0)


def test_conditional_accuracy_counts_the_asked_class():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 1.0], [5.0, 0.0, 0.0]])
    assert conditional_accuracy(logits, torch.tensor([0, 1, 2, 2])) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="labels"):
        conditional_accuracy(logits, torch.tensor([0, 1]))


def test_feature_classifier_interface_and_round_trip(tmp_path):
    torch.manual_seed(0)
    model = FeatureClassifier(block_channels=(4, 8), sample_size=16, feature_dim=12, label_names=list("abcdefghij"))
    images = torch.rand(5, 3, 16, 16) * 2 - 1
    out = model.eval()(images, labels=torch.arange(5))
    assert out.logits.shape == (5, 10) and out.features.shape == (5, 12) and out.loss.ndim == 0
    assert torch.equal(model.penultimate_features(images), out.features)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").is_file()
    loaded = FeatureClassifier.from_pretrained(tmp_path).eval()
    assert torch.allclose(loaded(images).logits, out.logits)
    assert loaded.config.label_names == list("abcdefghij")
    with pytest.raises(ValueError, match="B x 3 x 16 x 16"):
        model(torch.zeros(2, 3, 32, 32))
    with pytest.raises(TypeError, match="torch.Tensor"):
        model(np.zeros((2, 3, 16, 16)))


def test_scorer_gives_zero_fid_and_full_coverage_on_its_own_reference():
    torch.manual_seed(0)
    model = FeatureClassifier(block_channels=(4, 8), sample_size=16, feature_dim=6)
    reference = torch.rand(64, 3, 16, 16) * 2 - 1
    scorer = GenerationScorer(model, reference)
    result = scorer.score(reference, labels=torch.zeros(64, dtype=torch.long))
    assert result["fid"] == pytest.approx(0.0, abs=1e-6)
    assert result["precision"] == 1.0 and result["recall"] == 1.0 and result["num_samples"] == 64
    assert result["coverage"] == 1.0 and result["density"] == pytest.approx(1.0, abs=0.2)
    assert 0.0 <= result["conditional_accuracy"] <= 1.0
    assert scorer.fid(-reference) > 0  # different images, different features
    assert "not comparable to Inception FID" in FID_NAME
    with pytest.raises(TypeError, match="FeatureClassifier"):
        GenerationScorer(torch.nn.Linear(2, 2), reference)


def test_class_recall_does_not_credit_samples_of_the_wrong_class():
    torch.manual_seed(0)
    model = FeatureClassifier(block_channels=(4, 8), sample_size=16, feature_dim=6)
    dark, bright = torch.rand(32, 3, 16, 16) - 1, torch.rand(32, 3, 16, 16)  # two classes far apart in pixels
    reference, labels = torch.cat([dark, bright]), torch.tensor([0] * 32 + [1] * 32)
    scorer = GenerationScorer(model, reference, reference_labels=labels)
    right = scorer.score(reference, labels)
    assert right["class_precision"] == right["class_recall"] == right["class_coverage"] == 1.0
    swapped = scorer.score(reference, 1 - labels)  # every image asked for the other class
    assert swapped["recall"] == swapped["coverage"] == 1.0  # the pooled scores cannot tell
    assert swapped["class_recall"] < 0.5 and swapped["class_precision"] < 0.5 and swapped["class_coverage"] < 0.5
    assert "class_recall" not in GenerationScorer(model, reference).score(reference, labels)
    # per class: which class a gap is in; here the samples asked for the bright class are dark, the dark ones right
    half = scorer.score(torch.cat([dark, dark]), labels, per_class=True)
    assert set(half["per_class"]) == {0, 1} and half["per_class"][0]["recall"] == 1.0
    assert half["per_class"][1]["recall"] < 0.5 and half["per_class"][1]["coverage"] < 0.5
    assert half["class_recall"] == pytest.approx(sum(c["recall"] for c in half["per_class"].values()) / 2)
    with pytest.raises(ValueError, match="reference_labels"):
        GenerationScorer(model, reference).score(reference, labels, per_class=True)
    few = torch.tensor([0, 1, 2, 32, 33, 34])
    assert "class_recall" not in scorer.score(reference[few], labels[few])  # 3 per class: too few for k = 3
    with pytest.raises(ValueError, match="reference_labels"):
        GenerationScorer(model, reference, reference_labels=labels[:10])
