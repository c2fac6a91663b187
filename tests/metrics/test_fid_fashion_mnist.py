"""The committed feature classifier on real Fashion-MNIST: it classifies, and its FID ranks degradations as it
should (training images score near the floor; blur, noise and a single class score worse, stronger = worse).
A few thousand images only; skips without the data outside CI (the ``fashion_mnist_dir`` fixture)."""

import pytest
from testing_utils import ROOT

from diffusers_lmd.data import fashion_mnist_data_config, load_labelled_tensors
from diffusers_lmd.metrics import (
    FeatureClassifier,
    GenerationScorer,
    classifier_accuracy,
    degradation_fids,
    gaussian_blur,
)

CLASSIFIER = str(ROOT / "assets" / "fashion-mnist-classifier")


@pytest.fixture(scope="module")
def fmnist(fashion_mnist_dir):
    """1,000 training and 2,000 test images at 32 px, through the library's data path."""
    data = fashion_mnist_data_config(max_train_samples=1000, max_eval_samples=2000)
    train, test, names = load_labelled_tensors(data)
    return train, test, names


@pytest.fixture(scope="module")
def classifier():
    return FeatureClassifier.from_pretrained(CLASSIFIER).eval()


def test_the_committed_classifier_classifies_fashion_mnist(fmnist, classifier, one_thread):
    train, test, names = fmnist
    assert classifier.config.label_names == names
    assert classifier_accuracy(classifier, test) >= 0.88  # 2,000 of the 10,000 test images (card: all of them)


def test_fid_ranks_degradations_in_order(fmnist, classifier, one_thread):
    train, test, _ = fmnist
    scorer = GenerationScorer(classifier, test.images)
    fids = degradation_fids(scorer, train.images, train.labels, single_class=0)
    floor = fids["real"]
    # Real training images are close to the test split; every degradation is far worse than that...
    assert floor < 0.25 * min(v for k, v in fids.items() if k != "real"), fids
    # ...and worse the stronger it is.
    assert floor < fids["blur_0.5"] < fids["blur_1"] < fids["blur_2"], fids
    assert floor < fids["noise_0.1"] < fids["noise_0.2"] < fids["noise_0.4"], fids
    assert fids["single_class"] > fids["blur_0.5"], fids


def test_scores_of_real_images(fmnist, classifier, one_thread):
    train, test, _ = fmnist
    scorer = GenerationScorer(classifier, test.images)
    real = scorer.score(train.images, train.labels)
    assert real["conditional_accuracy"] > 0.88 and real["precision"] > 0.6 and real["recall"] > 0.6
    blurred = scorer.score(gaussian_blur(train.images, 2.0), train.labels)
    assert blurred["fid"] > 5 * real["fid"] and blurred["precision"] < real["precision"]
    one_class = train.labels == 7
    collapsed = scorer.score(train.images[one_class], train.labels[one_class])
    assert collapsed["recall"] < 0.5 * real["recall"]  # no diversity: most of the test split is not covered
