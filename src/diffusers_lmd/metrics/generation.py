"""Generation quality in a classifier's feature space (method.md §9): FID, conditional accuracy, precision / recall,
density / coverage.

FID here is the Fréchet distance between Gaussians fitted to the penultimate features of the project's own
Fashion-MNIST classifier (:class:`~diffusers_lmd.metrics.FeatureClassifier`), not Inception's, so its values are
**not comparable to Inception FID**; every report names it :data:`FID_NAME`. Like any FID it is biased upwards
at small sample counts, so compare values at the same number of samples only (the benchmark reports the floor,
the test split against the training split, at the count it scores generators with).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .feature_classifier import FeatureClassifier

FID_NAME = "FID on a Fashion-MNIST classifier's features (not comparable to Inception FID)"
DEFAULT_PR_K = 3  # Kynkäänniemi et al. 2019's k for the k-NN radii
DEFAULT_DC_K = 5  # Naeem et al. 2020's k for density / coverage


def _check_features(features: torch.Tensor, name: str, min_rows: int = 2) -> torch.Tensor:
    if not isinstance(features, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of N x D features, got {type(features).__name__}.")
    if features.ndim != 2 or features.shape[0] < min_rows:
        raise ValueError(f"{name} must be N x D features with N >= {min_rows}, got shape {tuple(features.shape)}.")
    if not torch.isfinite(features).all():
        raise ValueError(f"{name} holds non-finite values: the images fed to the classifier contain NaN or inf.")
    return features.double()


@dataclass
class GaussianStats:
    """Mean ``D`` and covariance ``D x D`` (float64) of ``count`` feature vectors."""

    mean: torch.Tensor
    cov: torch.Tensor
    count: int

    @classmethod
    def from_features(cls, features: torch.Tensor) -> GaussianStats:
        """The sample mean and unbiased covariance of ``N x D`` features (``N >= 2``)."""
        x = _check_features(features, "features")
        return cls(mean=x.mean(0), cov=torch.cov(x.T).reshape(x.shape[1], x.shape[1]), count=x.shape[0])


def _psd_sqrt(matrix: torch.Tensor) -> torch.Tensor:
    """Square root of a symmetric positive semi-definite matrix by eigen-decomposition (negative round-off -> 0)."""
    values, vectors = torch.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * values.clamp(min=0).sqrt()) @ vectors.T


def frechet_distance(a: GaussianStats, b: GaussianStats) -> float:
    """``|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))``, the Fréchet distance between two Gaussians.

    ``tr((S_a S_b)^(1/2))`` is computed as ``tr((A S_b A)^(1/2))`` with ``A = S_a^(1/2)``: the same eigenvalues, but
    of a symmetric PSD matrix, so it is real and stable even for singular covariances (fewer samples than
    dimensions), where ``scipy.linalg.sqrtm(S_a @ S_b)`` can return complex round-off.
    """
    for name, stats in (("a", a), ("b", b)):
        if not isinstance(stats, GaussianStats):
            raise TypeError(f"{name} must be GaussianStats (GaussianStats.from_features), got {type(stats).__name__}.")
    if a.mean.shape != b.mean.shape:
        raise ValueError(f"The Gaussians live in different spaces: {a.mean.shape[0]} vs {b.mean.shape[0]} dimensions.")
    mean_a, mean_b = a.mean.double(), b.mean.double()
    cov_a, cov_b = a.cov.double(), b.cov.double()
    root_a = _psd_sqrt(cov_a)
    cross = torch.linalg.eigvalsh(root_a @ cov_b @ root_a).clamp(min=0).sqrt().sum()
    value = (mean_a - mean_b).pow(2).sum() + torch.trace(cov_a) + torch.trace(cov_b) - 2 * cross
    return max(float(value), 0.0)


def _polynomial_mmd(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The unbiased squared MMD of two ``m x D`` sets under the kernel ``k(a, b) = (a . b / D + 1)^3``."""
    m, width = x.shape
    k_xx, k_yy, k_xy = ((p @ q.T / width + 1) ** 3 for p, q in ((x, x), (y, y), (x, y)))
    within = (k_xx.sum() - k_xx.diagonal().sum() + k_yy.sum() - k_yy.diagonal().sum()) / (m * (m - 1))
    return within - 2 * k_xy.mean()


def kernel_distance(
    a: torch.Tensor, b: torch.Tensor, subset_size: int = 1000, num_subsets: int = 100, seed: int = 0
) -> tuple[float, float]:
    """KID (Binkowski et al. 2018): the mean and (population) standard deviation of the unbiased polynomial-kernel
    MMD² between ``num_subsets`` seeded random subsets of ``subset_size`` rows of ``a`` and of ``b`` (``N x D``).

    Unlike FID it has an unbiased estimator, so values at different sample counts are comparable; it can be
    slightly negative when the two sets come from one distribution.
    """
    x, y = _check_features(a, "a"), _check_features(b, "b")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"a and b features differ in width: {x.shape[1]} vs {y.shape[1]}.")
    if not 2 <= subset_size <= min(x.shape[0], y.shape[0]):
        raise ValueError(
            f"subset_size must be between 2 and the smaller set's size ({min(x.shape[0], y.shape[0])}), "
            f"got {subset_size}."
        )
    if num_subsets < 1:
        raise ValueError(f"num_subsets must be at least 1, got {num_subsets}.")
    generator = torch.Generator().manual_seed(seed)
    values = torch.stack(
        [
            _polynomial_mmd(
                x[torch.randperm(x.shape[0], generator=generator)[:subset_size]],
                y[torch.randperm(y.shape[0], generator=generator)[:subset_size]],
            )
            for _ in range(num_subsets)
        ]
    )
    return float(values.mean()), float(values.std(correction=0))


def conditional_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of samples whose classifier prediction (argmax of ``B x K`` ``logits``) is the class asked for."""
    if logits.ndim != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(f"logits must be B x K and labels B, got {tuple(logits.shape)} and {tuple(labels.shape)}.")
    return float((logits.argmax(1).cpu() == labels.cpu().long()).double().mean())


def _kth_neighbour_radii(features: torch.Tensor, k: int, chunk: int = 1024) -> torch.Tensor:
    """Distance of every row to its ``k``-th nearest other row."""
    radii = []
    for start in range(0, features.shape[0], chunk):
        distances = torch.cdist(features[start : start + chunk], features)
        radii.append(distances.kthvalue(k + 1, dim=1).values)  # the 0 to itself is the first
    return torch.cat(radii)


def _share_inside(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, chunk: int = 1024) -> float:
    """Share of ``points`` inside at least one ball ``(centres[i], radii[i])``."""
    inside = []
    for start in range(0, points.shape[0], chunk):
        distances = torch.cdist(points[start : start + chunk], centres)
        inside.append((distances <= radii[None, :]).any(dim=1))
    return float(torch.cat(inside).double().mean())


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = DEFAULT_PR_K) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) of ``fake`` against ``real`` features.

    Each set's manifold is the union of balls around its points reaching their ``k``-th nearest neighbour.
    Precision: share of fake points inside the real manifold (fidelity); recall: share of real points inside
    the fake manifold (diversity). Use sets of equal size: both depend on it.
    """
    real = _check_features(real, "real", min_rows=k + 1)
    fake = _check_features(fake, "fake", min_rows=k + 1)
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"real and fake features differ in width: {real.shape[1]} vs {fake.shape[1]}.")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}.")
    precision = _share_inside(fake, real, _kth_neighbour_radii(real, k))
    recall = _share_inside(real, fake, _kth_neighbour_radii(fake, k))
    return precision, recall


def density_coverage(real: torch.Tensor, fake: torch.Tensor, k: int = DEFAULT_DC_K) -> tuple[float, float]:
    """Density and coverage (Naeem et al. 2020) of ``fake`` against ``real`` features.

    Both use balls around the *real* points only (to their ``k``-th nearest real neighbour), so a few far-off
    fake samples, whose own k-NN balls are large, cannot inflate them as they inflate recall. Coverage: share of
    real points whose ball holds at least one fake point (diversity); density: fake points' mean count of real
    balls they fall in, over ``k`` (fidelity, about 1 for samples from the real distribution, unbounded above).
    Use sets of equal size: both depend on it.
    """
    real = _check_features(real, "real", min_rows=k + 1)
    fake = _check_features(fake, "fake", min_rows=1)
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"real and fake features differ in width: {real.shape[1]} vs {fake.shape[1]}.")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}.")
    radii = _kth_neighbour_radii(real, k)
    counts, covered = torch.zeros(fake.shape[0], dtype=torch.float64), torch.zeros(real.shape[0], dtype=torch.bool)
    for start in range(0, fake.shape[0], 1024):
        inside = torch.cdist(fake[start : start + 1024], real) <= radii[None, :]
        counts[start : start + 1024] = inside.sum(dim=1).double()
        covered |= inside.any(dim=0)
    return float(counts.mean() / k), float(covered.double().mean())


@torch.no_grad()
def classifier_outputs(
    classifier: FeatureClassifier, images: torch.Tensor, batch_size: int = 500
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(features N x D, logits N x K)`` on the CPU for images in ``[-1, 1]`` (clamped: generators overshoot)."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"images must be a non-empty N x C x H x W tensor, got {getattr(images, 'shape', images)}.")
    was_training = classifier.training
    classifier.eval()
    features, logits = [], []
    try:
        for start in range(0, images.shape[0], batch_size):
            batch = images[start : start + batch_size].to(classifier.device, classifier.dtype).clamp(-1.0, 1.0)
            out = classifier(batch)
            features.append(out.features.float().cpu())
            logits.append(out.logits.float().cpu())
    finally:
        classifier.train(was_training)
    return torch.cat(features), torch.cat(logits)


class GenerationScorer:
    """Scores sets of generated images against fixed reference images (the test split) in one call each.

    The reference features are computed once: their Gaussian for FID, and a seeded subset for precision /
    recall and density / coverage, as large as each scored set (these metrics depend on set size).

    Args:
        classifier: the feature network (``FeatureClassifier.from_pretrained("assets/fashion-mnist-classifier")``).
        reference_images: ``N x 3 x 32 x 32`` in ``[-1, 1]``.
        k: neighbours for the precision / recall radii.
        seed: seeds the reference subset for precision / recall.
        reference_labels: the reference images' classes (``N``); with them, a set scored with the classes it was
            asked for also gets ``class_precision`` / ``class_recall`` / ``class_coverage`` (see :meth:`score`).
    """

    def __init__(
        self,
        classifier: FeatureClassifier,
        reference_images: torch.Tensor,
        k: int = DEFAULT_PR_K,
        seed: int = 0,
        reference_labels: torch.Tensor | None = None,
    ):
        if not isinstance(classifier, FeatureClassifier):
            raise TypeError(f"classifier must be a FeatureClassifier, got {type(classifier).__name__}.")
        if reference_labels is not None and tuple(reference_labels.shape) != (reference_images.shape[0],):
            raise ValueError(f"reference_labels must hold one class per reference image ({reference_images.shape[0]}), "
                             f"got shape {tuple(reference_labels.shape)}.")  # fmt: skip
        self.classifier, self.k = classifier, k
        self.reference_features, _ = classifier_outputs(classifier, reference_images)
        self.reference_stats = GaussianStats.from_features(self.reference_features)
        self._order = torch.randperm(self.reference_features.shape[0], generator=torch.Generator().manual_seed(seed))
        self.reference_labels = None if reference_labels is None else reference_labels.cpu().long()

    def fid(self, images: torch.Tensor) -> float:
        """:data:`FID_NAME` of ``images`` against the reference images."""
        features, _ = classifier_outputs(self.classifier, images)
        return frechet_distance(GaussianStats.from_features(features), self.reference_stats)

    def score(self, images: torch.Tensor, labels: torch.Tensor | None = None, per_class: bool = False) -> dict:
        """``fid``, ``precision``, ``recall``, ``density`` / ``coverage`` (from 6 images), ``num_samples`` and, with
        ``labels`` (the classes asked for), ``conditional_accuracy``, plus ``class_precision`` / ``class_recall`` /
        ``class_coverage`` when the scorer has reference labels; ``per_class=True`` adds ``per_class``, those three
        scores for each class (``{class: {"precision", "recall", "coverage"}}``), to see which classes a gap is in."""
        if per_class and (labels is None or self.reference_labels is None):
            raise ValueError("per_class=True needs the classes asked for (labels) and a scorer built with "
                             "reference_labels.")  # fmt: skip
        features, logits = classifier_outputs(self.classifier, images)
        result = {
            "fid": frechet_distance(GaussianStats.from_features(features), self.reference_stats),
            "num_samples": int(features.shape[0]),
        }
        count = min(features.shape[0], self.reference_features.shape[0])
        real = self.reference_features[self._order[:count]]
        result["precision"], result["recall"] = precision_recall(real, features[:count], self.k)
        if count > DEFAULT_DC_K:
            result["density"], result["coverage"] = density_coverage(real, features[:count])
        if labels is not None:
            result["conditional_accuracy"] = conditional_accuracy(logits, labels)
            if self.reference_labels is not None:
                classes = self._per_class_scores(features, labels)
                for name in ("precision", "recall", "coverage") if classes else ():
                    result[f"class_{name}"] = sum(scores[name] for scores in classes.values()) / len(classes)
                if per_class:
                    result["per_class"] = classes
        return result

    def _per_class_scores(self, features: torch.Tensor, labels: torch.Tensor) -> dict[int, dict[str, float]]:
        """Precision / recall / coverage within each class asked for: the samples asked for class ``c`` against as
        many reference images of class ``c`` (a seeded subset); empty when a class has too few samples or reference
        images for the k-NN radii (``k`` and :data:`DEFAULT_DC_K` or fewer).

        Unlike the pooled scores, a sample of the wrong class cannot cover real images of another
        class here, so this reads how varied the samples of one class are against that class's real images.
        """
        labels = labels.cpu().long()
        ordered_labels = self.reference_labels[self._order]
        classes = {}
        for c in labels.unique().tolist():
            fake = features[labels == c]
            real = self.reference_features[self._order[ordered_labels == c]][: fake.shape[0]]
            if min(fake.shape[0], real.shape[0]) <= max(self.k, DEFAULT_DC_K):
                return {}
            fake = fake[: real.shape[0]]
            precision, recall = precision_recall(real, fake, self.k)
            classes[c] = {"precision": precision, "recall": recall, "coverage": density_coverage(real, fake)[1]}
        return classes
