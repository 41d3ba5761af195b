"""Evaluation: loss, accuracy, per-class accuracy and the confusion matrix of a network."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from netspec.executor import Network
from netspec.losses import softmax_cross_entropy

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


def normalise_images(images: np.ndarray, mean: float, std: float,
                     dtype: np.dtype = np.float32) -> np.ndarray:
    """uint8 (N, H, W) images -> standardised (N, 1, H, W) floats."""
    scaled = images.astype(dtype)[:, None] / dtype(255.0) if images.ndim == 3 else \
        images.astype(dtype) / dtype(255.0)
    return (scaled - dtype(mean)) / dtype(std)


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
