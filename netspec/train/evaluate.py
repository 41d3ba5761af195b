"""Evaluation: loss, accuracy, per-class accuracy and the confusion matrix of a network."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from netspec.common.errors import NetspecError
from netspec.data.dataset import unit_scale
from netspec.runtime.executor import Network
from netspec.runtime.losses import softmax_cross_entropy

# inference runs in chunks of this many samples, bounding its memory
EVALUATION_BATCH = 1000


@dataclass(frozen=True)
class Evaluation:
    """Metrics over a labelled set, with every prediction kept for plots and reports."""

    loss: float
    accuracy: float
    predictions: np.ndarray
    labels: np.ndarray
    confusion: np.ndarray

    @property
    def per_class_accuracy(self) -> np.ndarray:
        totals = self.confusion.sum(axis=1)
        return np.divide(np.diag(self.confusion), totals, out=np.zeros(len(totals)),
                         where=totals > 0)

    def as_dict(self) -> dict:
        return {"loss": self.loss, "accuracy": self.accuracy,
                "per_class_accuracy": self.per_class_accuracy.round(6).tolist(),
                "confusion": self.confusion.tolist()}


def standardise(images: np.ndarray, mean: float | Sequence[float],
                std: float | Sequence[float]) -> np.ndarray:
    """Images ``(N, C, H, W)`` on the [0, 1] scale, standardised channel by channel."""
    dtype = images.dtype.type
    channels = images.shape[1]
    means = np.asarray(mean, dtype=np.float64).reshape(-1)
    stds = np.asarray(std, dtype=np.float64).reshape(-1)
    if len(means) == 1 and len(stds) == 1:
        # one channel: the scalar arithmetic every run before colour data used, bit for bit
        return (images - dtype(means[0])) / dtype(stds[0])
    if len(means) != channels or len(stds) != channels:
        raise NetspecError(f"normalisation for {len(means)} channel(s), images have {channels}")
    return (images - means.astype(dtype).reshape(1, -1, 1, 1)) / stds.astype(dtype).reshape(
        1, -1, 1, 1)


def normalise_images(images: np.ndarray, mean: float | Sequence[float],
                     std: float | Sequence[float], dtype: np.dtype = np.float32) -> np.ndarray:
    """Images -> standardised ``(N, C, H, W)`` floats: uint8 ``(N, H, W)`` (a channel is added)
    or ``(N, C, H, W)`` uint8 0..255 or floats 0..1."""
    batch = images[:, None] if images.ndim == 3 else images
    return standardise(unit_scale(batch, dtype), mean, std)


def predict_logits(net: Network, x: np.ndarray, batch_size: int = EVALUATION_BATCH) -> np.ndarray:
    """Inference-mode outputs for ``x``, computed in batches to bound memory."""
    outputs = [net.forward(x[start:start + batch_size], train=False)
               for start in range(0, len(x), batch_size)]
    return np.concatenate(outputs) if outputs else np.zeros((0, *net.output_shape))


def evaluate(net: Network, x: np.ndarray, labels: np.ndarray, batch_size: int = EVALUATION_BATCH,
             classes: int | None = None) -> Evaluation:
    """Loss and accuracy of ``net`` on standardised inputs ``x`` with integer ``labels``."""
    logits = predict_logits(net, x, batch_size).astype(np.float64)
    return evaluation_from_logits(logits, labels, classes)


def evaluation_from_logits(logits: np.ndarray, labels: np.ndarray,
                           classes: int | None = None) -> Evaluation:
    """Loss, accuracy and confusion of float64 ``logits`` against integer ``labels``."""
    classes = classes or logits.shape[1]
    loss, _ = softmax_cross_entropy(logits, labels)
    predictions = logits.argmax(axis=1)
    confusion = np.bincount(labels.astype(np.int64) * classes + predictions,
                            minlength=classes * classes).reshape(classes, classes)
    accuracy = float((predictions == labels).mean()) if len(labels) else 0.0
    return Evaluation(loss, accuracy, predictions, labels, confusion)
