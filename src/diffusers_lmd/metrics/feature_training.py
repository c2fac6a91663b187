"""Training the FID feature classifier on Fashion-MNIST (the labelled tensors come from
:func:`diffusers_lmd.data.load_labelled_tensors`, the one data path of the data flags).

``training/train_feature_classifier.py`` is the command line; the model is committed under
``assets/fashion-mnist-classifier/`` with a card that records the command, the CPU time and the test accuracy.
"""

from __future__ import annotations

import json
import math
import os
import time

import torch

from ..data import LabelledTensors, random_flip_batch
from .feature_classifier import FeatureClassifier

CARD_NAME = "README.md"
METRICS_NAME = "classifier_metrics.json"


@torch.no_grad()
def classifier_accuracy(model: FeatureClassifier, data: LabelledTensors, batch_size: int = 500) -> float:
    """Top-1 accuracy of ``model`` on ``data`` (eval mode)."""
    was_training = model.training
    model.eval()
    correct = 0
    for start in range(0, len(data), batch_size):
        logits = model(data.images[start : start + batch_size].to(model.device)).logits
        correct += int((logits.argmax(1).cpu() == data.labels[start : start + batch_size]).sum())
    model.train(was_training)
    return correct / len(data)


def train_feature_classifier(
    train: LabelledTensors,
    test: LabelledTensors,
    label_names: list[str],
    epochs: int = 3,
    batch_size: int = 128,
    learning_rate: float = 3e-3,
    weight_decay: float = 5e-4,
    block_channels: tuple[int, ...] = (16, 32, 64),
    feature_dim: int = 128,
    seed: int = 0,
    log=print,
) -> tuple[FeatureClassifier, dict]:
    """Train a :class:`FeatureClassifier` with AdamW and a one-cycle rate, random horizontal flips only.

    Flips keep the class and match the generators' training augmentation; no other augmentation, so the
    features stay sensitive to blur, noise and shifts. Returns the model (eval mode) and its metrics: test
    accuracy after every epoch, wall and CPU seconds of training.
    """
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be at least 1, got {epochs} and {batch_size}.")
    torch.manual_seed(seed)
    model = FeatureClassifier(
        in_channels=train.images.shape[1],
        sample_size=train.images.shape[2],
        num_classes=len(label_names),
        block_channels=tuple(block_channels),
        feature_dim=feature_dim,
        label_names=list(label_names),
    )
    steps_per_epoch = len(train) // batch_size
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=learning_rate, total_steps=epochs * steps_per_epoch
    )
    generator = torch.Generator().manual_seed(seed)
    wall, cpu = time.perf_counter(), time.process_time()
    history = []
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(train), generator=generator)
        running = 0.0
        for step in range(steps_per_epoch):
            indices = order[step * batch_size : (step + 1) * batch_size]
            images = random_flip_batch(train.images[indices], generator)
            loss = model(images, labels=train.labels[indices]).loss
            loss.backward()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            running += loss.item()
            if not math.isfinite(running):
                raise ValueError(f"The classifier's loss became {running} at epoch {epoch}: lower the learning rate.")
        accuracy = classifier_accuracy(model, test)
        history.append({"epoch": epoch + 1, "train_loss": running / steps_per_epoch, "test_accuracy": accuracy})
        log(f"epoch {epoch + 1}/{epochs}: train loss {running / steps_per_epoch:.4f}, test accuracy {accuracy:.4f}")
    metrics = {
        "test_accuracy": history[-1]["test_accuracy"],
        "train_accuracy": classifier_accuracy(model, train),
        "train_wall_s": round(time.perf_counter() - wall, 1),
        "train_cpu_s": round(time.process_time() - cpu, 1),
        "torch_threads": torch.get_num_threads(),
        "epochs": epochs,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "num_train_images": len(train),
        "num_test_images": len(test),
        "history": history,
    }
    return model.eval(), metrics


def write_model_card(output_dir: str, metrics: dict, command: str, hardware: str) -> str:
    """The folder's README: what the classifier is for, how it was trained, its test accuracy and cost."""
    path = os.path.join(output_dir, CARD_NAME)
    text = f"""# Fashion-MNIST feature classifier (for generation metrics)

A compact CNN (`diffusers_lmd.metrics.FeatureClassifier`, {metrics["num_parameters"]:,} parameters) trained on the
Fashion-MNIST training split. It exists to score generated images where no Inception or CLIP weights can be
downloaded (method.md §9):

- **FID on a Fashion-MNIST classifier's features (not comparable to Inception FID)**: the Fréchet distance
  between Gaussians fitted to its penultimate features ({metrics.get("feature_dim", 128)}-D) of generated and
  test-split images;
- **conditional accuracy**: the share of class-conditional samples it assigns to the class asked for;
- **precision / recall** (Kynkäänniemi et al. 2019) in the same feature space.

Inputs: `B x 3 x 32 x 32` in `[-1, 1]`, greyscale replicated to RGB, the 28x28 images centred on a black 32x32
canvas (`--dataset_name fashion_mnist --resolution 32 --pad_to_resolution`).

| | |
|---|---|
| test accuracy (10,000 test images) | **{metrics["test_accuracy"]:.2%}** |
| training accuracy | {metrics["train_accuracy"]:.2%} |
| training | {metrics["epochs"]} epochs, batch {metrics["batch_size"]}, AdamW one-cycle peak \
{metrics["learning_rate"]:g}, random horizontal flips |
| training cost | {metrics["train_cpu_s"]:.0f} CPU s ({metrics["train_wall_s"]:.0f} s wall, {metrics["torch_threads"]} \
threads) on {hardware} |

Reproduce (from the repository root):

```
{command}
```

Load it with `FeatureClassifier.from_pretrained("assets/fashion-mnist-classifier")`; the metrics are in
`diffusers_lmd.metrics` (`GenerationScorer`). Per-epoch test accuracy is in `{METRICS_NAME}`.
"""
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    with open(os.path.join(output_dir, METRICS_NAME), "w", encoding="utf-8") as f:
        json.dump({**metrics, "command": command, "hardware": hardware}, f, indent=1)
    return path
