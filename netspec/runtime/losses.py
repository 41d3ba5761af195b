"""Losses with their gradients, computed together in one pass."""

from __future__ import annotations

import numpy as np


def softmax_cross_entropy(
    logits: np.ndarray, labels: np.ndarray, label_smoothing: float = 0.0
) -> tuple[float, np.ndarray]:
    """Mean cross-entropy of ``logits`` (N, K) against integer ``labels`` (N,), and its
    gradient w.r.t. the logits.

    Log-sum-exp keeps it finite for any logits: the largest logit is subtracted first.

    >>> loss, grad = softmax_cross_entropy(np.array([[0.0, 0.0]]), np.array([1]))
    >>> round(loss, 6), grad.tolist()
    (0.693147, [[0.5, -0.5]])
    """
    n, classes = logits.shape
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    log_probs = shifted - log_norm
    target = np.full_like(logits, label_smoothing / classes)
    target[np.arange(n), labels] += 1.0 - label_smoothing
    loss = float(-(target * log_probs).sum() / n)
    grad = (np.exp(log_probs) - target) / n
    return loss, grad.astype(logits.dtype, copy=False)
