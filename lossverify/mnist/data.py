"""MNIST data for the notes' experiments, with a real offline fallback.

Where the images come from, in order:

1. a Keras-format ``mnist.npz`` given by path (keys ``x_train``, ``y_train``, ``x_test``,
   ``y_test``; ``uint8`` images of shape ``(N, 28, 28)``, integer labels ``0..9``);
2. the Keras cache, ``~/.keras/datasets/mnist.npz``, if a previous ``keras.datasets``
   download left one there;
3. otherwise scikit-learn's handwritten digits (1,797 images of 8x8 pixels that ship with
   scikit-learn, so nothing is downloaded), resized to 28x28 by bilinear interpolation and
   split 80/20 into train and test with a fixed permutation.

Nothing here fetches from the network. Files are opened with ``allow_pickle=False``: an
``npz`` holding pickled object arrays is refused, never executed. Every problem with a file
raises :class:`DataFileError` naming the file and what was wrong.

This module imports NumPy only; TensorFlow is not needed to load or inspect the data.
"""

from __future__ import annotations

import dataclasses
import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "DataFileError",
    "EXPECTED",
    "MnistData",
    "KERAS_CACHE_PATH",
    "digits_as_mnist",
    "load_data",
    "load_npz",
    "one_hot",
]

#: Where ``keras.datasets.mnist.load_data()`` caches its download.
KERAS_CACHE_PATH = Path("~/.keras/datasets/mnist.npz")

NUM_CLASSES = 10
IMAGE_SIDE = 28
_KEYS = ("x_train", "y_train", "x_test", "y_test")
#: What a data file must be, as error messages say it.
EXPECTED = "a Keras-format mnist.npz with x_train, y_train, x_test, y_test"
#: First bytes of a zip archive (local file header; end of central directory if empty)
#: and of a single ``.npy`` array.
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_NPY_MAGIC = b"\x93NUMPY"
#: Fraction of scikit-learn's digits held out as the test set, and the permutation seed.
_DIGITS_TEST_FRACTION = 0.2
_DIGITS_SPLIT_SEED = 0


class DataFileError(ValueError):
    """A data file is missing, unreadable, or does not hold MNIST-shaped arrays."""


@dataclass(frozen=True)
class MnistData:
    """Images scaled to ``[0, 1]`` as ``float32`` ``(N, 28, 28, 1)``; labels ``int64 (N,)``."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    #: Human-readable description of where the data came from.
    source: str

    def subset(self, n_train: int | None = None, n_test: int | None = None) -> MnistData:
        """The first ``n_train`` training and ``n_test`` test examples (``None``: all)."""
        for name, n in (("n_train", n_train), ("n_test", n_test)):
            if n is not None and n < 1:
                raise ValueError(f"{name}: expected a positive number of examples, got {n}")
        return MnistData(
            self.x_train[:n_train],
            self.y_train[:n_train],
            self.x_test[:n_test],
            self.y_test[:n_test],
            self.source,
        )

    def __repr__(self) -> str:
        return (
            f"MnistData({len(self.x_train)} train, {len(self.x_test)} test, "
            f"source={self.source!r})"
        )


def one_hot(labels: np.ndarray, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Integer labels ``(N,)`` to ``float32`` one-hot rows ``(N, num_classes)``."""
    labels = np.asarray(labels)
    out = np.zeros((labels.shape[0], num_classes), dtype=np.float32)
    out[np.arange(labels.shape[0]), labels] = 1.0
    return out


def _prepare(images: np.ndarray) -> np.ndarray:
    """``uint8 (N, 28, 28)`` to ``float32 (N, 28, 28, 1)`` in ``[0, 1]`` (the notes' ``/255``)."""
    return (images.astype(np.float32) / np.float32(255.0))[..., np.newaxis]


def _check_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Raise :class:`DataFileError` unless ``arrays`` look like Keras's MNIST."""
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.dtype != np.uint8:
            raise DataFileError(
                f"{path}: x_{split} has dtype {x.dtype}, expected uint8 pixel values 0..255"
            )
        if x.ndim != 3 or x.shape[1:] != (IMAGE_SIDE, IMAGE_SIDE) or x.shape[0] == 0:
            raise DataFileError(
                f"{path}: x_{split} has shape {x.shape}, expected (N, 28, 28) with N > 0"
            )
        if not np.issubdtype(y.dtype, np.integer):
            raise DataFileError(
                f"{path}: y_{split} has dtype {y.dtype}, expected integer class labels"
            )
        if y.shape != (x.shape[0],):
            raise DataFileError(
                f"{path}: y_{split} has shape {y.shape}, expected ({x.shape[0]},) "
                f"to match x_{split}"
            )
        if y.min() < 0 or y.max() >= NUM_CLASSES:
            raise DataFileError(
                f"{path}: y_{split} holds labels from {y.min()} to {y.max()}, "
                f"expected 0..{NUM_CLASSES - 1}"
            )


def _open_as_zip(path: Path) -> None:
    """Raise :class:`DataFileError` unless ``path`` is a readable file that starts like a
    zip archive (an ``.npz`` is a zip of ``.npy`` files).

    Looking at the first bytes first gives the true reason for a wrong file: NumPy,
    handed a text file with ``allow_pickle=False``, would report that it "contains
    pickled data", because anything that is neither ``.npy`` nor zip is tried as a pickle.
    """
    if not path.exists():
        raise DataFileError(f"{path}: no such file; expected {EXPECTED}")
    if path.is_dir():
        raise DataFileError(f"{path}: is a directory; expected {EXPECTED}")
    if not path.is_file():
        raise DataFileError(f"{path}: not a regular file; expected {EXPECTED}")
    try:
        with open(path, "rb") as fh:
            head = fh.read(len(_NPY_MAGIC))
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise DataFileError(f"{path}: cannot be read ({reason}); expected {EXPECTED}") from exc
    if not head:
        raise DataFileError(f"{path}: is empty; expected {EXPECTED}")
    if head.startswith(_NPY_MAGIC):
        raise DataFileError(
            f"{path}: holds a single .npy array, not a .npz archive; expected {EXPECTED}"
        )
    if not head.startswith(_ZIP_MAGIC):
        raise DataFileError(
            f"{path}: not a .npz archive (NumPy could not read it as a zip file); "
            f"expected {EXPECTED}"
        )


def _read_member(path: Path, archive: np.lib.npyio.NpzFile, key: str) -> np.ndarray:
    """``archive[key]`` as an array, or :class:`DataFileError` saying why not."""
    try:
        value = archive[key]
    except ValueError as exc:
        if "allow_pickle" in str(exc):  # NumPy's refusal of an object array
            raise DataFileError(
                f"{path}: contains pickled (object) arrays ({key}), which are refused for "
                "safety; expected plain uint8/integer arrays"
            ) from exc
        raise DataFileError(f"{path}: {key} is not a readable .npy array ({exc})") from exc
    if not isinstance(value, np.ndarray):
        raise DataFileError(f"{path}: {key} is not a .npy array; expected {EXPECTED}")
    return value


def load_npz(path: str | os.PathLike[str]) -> MnistData:
    """Load and check a Keras-format ``mnist.npz``; see the module docstring for the format.

    Every problem (no such file, a directory, an unreadable file, a file of another
    format, a corrupt archive, missing keys, pickled object arrays, wrong shapes, dtypes
    or labels) raises :class:`DataFileError` with a one-line message that starts with the
    path and says what was expected.
    """
    path = Path(path).expanduser()
    _open_as_zip(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [k for k in _KEYS if k not in archive.files]
            if missing:
                raise DataFileError(
                    f"{path}: missing key(s) {', '.join(missing)}; found "
                    f"{', '.join(archive.files) or 'none'}, expected {', '.join(_KEYS)}"
                )
            arrays = {k: _read_member(path, archive, k) for k in _KEYS}
    except DataFileError:
        raise
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as exc:
        raise DataFileError(
            f"{path}: not a readable .npz archive, truncated or corrupt ({exc}); "
            f"expected {EXPECTED}"
        ) from exc
    _check_arrays(path, arrays)
    return MnistData(
        _prepare(arrays["x_train"]),
        arrays["y_train"].astype(np.int64),
        _prepare(arrays["x_test"]),
        arrays["y_test"].astype(np.int64),
        source=f"MNIST from {path}",
    )


def _bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """``(n_out, n_in)`` matrix of bilinear weights (pixel centres aligned, edges clamped)."""
    centres = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    centres = np.clip(centres, 0.0, n_in - 1.0)
    lo = np.floor(centres).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = centres - lo
    weights = np.zeros((n_out, n_in))
    weights[np.arange(n_out), lo] += 1.0 - frac
    weights[np.arange(n_out), hi] += frac
    return weights


def _resize(images: np.ndarray, side: int) -> np.ndarray:
    """Bilinear resize of ``(N, h, w)`` images to ``(N, side, side)`` (separable)."""
    rows = _bilinear_matrix(images.shape[1], side)
    cols = _bilinear_matrix(images.shape[2], side)
    return np.einsum("ij,njk,lk->nil", rows, images, cols)


def digits_as_mnist() -> dict[str, np.ndarray]:
    """scikit-learn's 8x8 digits as Keras-format MNIST arrays (``uint8`` 28x28, split 80/20).

    The digits' pixel values 0..16 are rescaled to 0..255 and the images resized
    bilinearly to 28x28. The split is a fixed permutation (seed 0), independent of the
    training seed, so the test set is the same for every run.
    """
    from sklearn.datasets import load_digits  # ships its data; no download

    digits = load_digits()
    images = _resize(digits.images.astype(np.float64) * (255.0 / 16.0), IMAGE_SIDE)
    images = np.clip(np.rint(images), 0, 255).astype(np.uint8)
    labels = digits.target.astype(np.int64)
    order = np.random.default_rng(_DIGITS_SPLIT_SEED).permutation(len(labels))
    n_test = int(round(len(labels) * _DIGITS_TEST_FRACTION))
    test, train = order[:n_test], order[n_test:]
    return {
        "x_train": images[train],
        "y_train": labels[train],
        "x_test": images[test],
        "y_test": labels[test],
    }


def load_data(
    path: str | os.PathLike[str] | None = None,
    *,
    cache_path: str | os.PathLike[str] | None = KERAS_CACHE_PATH,
    announce: Callable[[str], None] | None = print,
) -> MnistData:
    """Load MNIST from ``path``, else the Keras cache, else the embedded digits.

    ``path`` given and unusable is an error (no silent fallback); a missing Keras cache
    falls through to scikit-learn's digits. ``announce`` receives one line saying which
    data set is in use (``None`` to stay silent).
    """
    if path is not None:
        data = load_npz(path)
    elif cache_path is not None and Path(cache_path).expanduser().is_file():
        data = load_npz(cache_path)
        data = dataclasses.replace(
            data, source=f"MNIST from the Keras cache {Path(cache_path).expanduser()}")
    else:
        arrays = digits_as_mnist()
        data = MnistData(
            _prepare(arrays["x_train"]),
            arrays["y_train"],
            _prepare(arrays["x_test"]),
            arrays["y_test"],
            source=(
                "scikit-learn handwritten digits (1,797 8x8 images resized to 28x28; "
                "no mnist.npz given or cached)"
            ),
        )
    if announce is not None:
        announce(
            f"Data: {data.source}: {len(data.x_train)} training and "
            f"{len(data.x_test)} test images."
        )
    return data
