"""The notes' pictures: a 2x5 grid of one digit per class, and the training curves.

Figures are drawn with ``matplotlib.figure.Figure`` (no pyplot, no GUI backend) and saved
through :func:`lossverify._io.atomic_path`, so an interrupted run never leaves half a PNG.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from lossverify._io import atomic_path

__all__ = ["save_curves", "save_digit_grid"]


def save_digit_grid(images: np.ndarray, labels: np.ndarray,
                    path: str | os.PathLike[str]) -> list[int]:
    """Save the first image of each class 0..9 in a 2x5 grid; return the indices used.

    ``images`` is ``(N, 28, 28)`` or ``(N, 28, 28, 1)``; every class must occur.
    """
    labels = np.asarray(labels)
    indices = []
    for digit in range(10):
        found = np.flatnonzero(labels == digit)
        if found.size == 0:
            raise ValueError(f"labels: no example of class {digit} to draw")
        indices.append(int(found[0]))
    fig = Figure(figsize=(10, 4.4))
    axes = fig.subplots(2, 5)
    for digit, (ax, index) in enumerate(zip(axes.ravel(), indices, strict=True)):
        ax.imshow(np.squeeze(images[index]), cmap="gray_r")
        ax.set_title(f"label {digit}")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80)
    return indices


def save_curves(history: Mapping[str, Sequence[float]], path: str | os.PathLike[str],
                title: str) -> None:
    """Loss and accuracy per epoch, train and test, side by side."""
    epochs = list(history["epoch"])
    fig = Figure(figsize=(10, 4))
    loss_ax, acc_ax = fig.subplots(1, 2)
    for ax, key, label in ((loss_ax, "loss", "loss"), (acc_ax, "accuracy", "accuracy")):
        ax.plot(epochs, history[key], "o-", label=f"train {label}")
        ax.plot(epochs, history[f"test_{key}"], "s--", label=f"test {label}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80)
