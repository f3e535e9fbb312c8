"""Loading MNIST: good files, bad files, and the scikit-learn digits fallback."""

from __future__ import annotations

import numpy as np
import pytest

from lossverify.mnist import data as data_module
from lossverify.mnist.data import DataFileError, digits_as_mnist, load_data, load_npz, one_hot


def _arrays(n_train=6, n_test=4, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "x_train": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "y_train": rng.integers(0, 10, n_train).astype(np.uint8),
        "x_test": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "y_test": rng.integers(0, 10, n_test).astype(np.uint8),
    }


def _write(tmp_path, name="mnist.npz", **overrides):
    arrays = {**_arrays(), **overrides}
    arrays = {k: v for k, v in arrays.items() if v is not None}
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def test_good_file_is_scaled_with_channel_axis(tmp_path):
    raw = _arrays()
    path = tmp_path / "mnist.npz"
    np.savez(path, **raw)
    data = load_npz(path)
    assert data.x_train.shape == (6, 28, 28, 1) and data.x_train.dtype == np.float32
    assert data.x_test.shape == (4, 28, 28, 1)
    np.testing.assert_array_equal(data.x_train[..., 0], raw["x_train"] / np.float32(255))
    np.testing.assert_array_equal(data.y_train, raw["y_train"])
    assert data.y_train.dtype == np.int64
    assert 0.0 <= data.x_train.min() and data.x_train.max() <= 1.0
    assert str(path) in data.source


def test_load_data_prefers_explicit_path_then_cache(tmp_path):
    explicit = _write(tmp_path, "explicit.npz")
    cache = _write(tmp_path, "cache.npz", x_train=np.zeros((3, 28, 28), np.uint8),
                   y_train=np.zeros(3, np.uint8))
    lines = []
    assert len(load_data(explicit, cache_path=cache, announce=lines.append).x_train) == 6
    assert len(load_data(None, cache_path=cache, announce=lines.append).x_train) == 3
    assert "Keras cache" in lines[-1] and str(cache) in lines[-1]


def test_explicit_missing_path_is_an_error_not_a_fallback(tmp_path):
    with pytest.raises(DataFileError, match=r"nope\.npz: no such file"):
        load_data(tmp_path / "nope.npz", announce=None)


def test_pickled_object_array_is_refused(tmp_path):
    arrays = _arrays()
    arrays["y_train"] = np.array([{"evil": 1}] * 6, dtype=object)
    path = tmp_path / "pickled.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataFileError, match=r"pickled\.npz: contains pickled"):
        load_npz(path)


def test_missing_key_is_named(tmp_path):
    path = _write(tmp_path, y_test=None)
    with pytest.raises(DataFileError, match=r"missing key\(s\) y_test"):
        load_npz(path)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"x_train": np.zeros((6, 28, 27), np.uint8)}, r"x_train has shape \(6, 28, 27\)"),
        ({"x_test": np.zeros((4, 784), np.uint8)}, r"x_test has shape \(4, 784\)"),
        ({"x_train": np.zeros((6, 28, 28), np.float32)}, r"x_train has dtype float32"),
        ({"y_train": np.zeros(5, np.uint8)}, r"y_train has shape \(5,\), expected \(6,\)"),
        ({"y_test": np.zeros(4, np.float64)}, r"y_test has dtype float64"),
        ({"y_test": np.array([0, 1, 2, 10])}, r"y_test holds labels from 0 to 10"),
    ],
)
def test_wrong_shapes_dtypes_and_labels_are_named(tmp_path, override, message):
    path = _write(tmp_path, **override)
    with pytest.raises(DataFileError, match=message) as info:
        load_npz(path)
    assert str(path) in str(info.value)


def test_truncated_file_is_reported(tmp_path):
    good = _write(tmp_path, "good.npz")
    bad = tmp_path / "truncated.npz"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(DataFileError, match=r"truncated\.npz: not a readable \.npz"):
        load_npz(bad)


def test_garbage_and_plain_npy_are_reported(tmp_path):
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"definitely not a zip archive" * 10)
    with pytest.raises(DataFileError, match=r"garbage\.npz: not a \.npz archive"):
        load_npz(garbage)
    npy = tmp_path / "single.npy"
    np.save(npy, np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(DataFileError, match=r"single\.npy: holds a single \.npy array"):
        load_npz(npy)


def test_digits_fallback_is_real_mnist_shaped_data(tmp_path):
    lines = []
    data = load_data(None, cache_path=tmp_path / "absent.npz", announce=lines.append)
    assert "scikit-learn handwritten digits" in lines[0]
    assert len(data.x_train) + len(data.x_test) == 1797
    assert data.x_train.shape[1:] == (28, 28, 1) and data.x_train.dtype == np.float32
    assert set(np.unique(data.y_train)) == set(range(10))
    assert data.x_train.max() == 1.0 and data.x_train.min() == 0.0
    raw = digits_as_mnist()
    again = digits_as_mnist()
    np.testing.assert_array_equal(raw["x_train"], again["x_train"])
    np.testing.assert_array_equal(raw["y_test"], again["y_test"])


def test_resize_preserves_a_constant_image_and_the_mean():
    from lossverify.mnist.data import _resize

    flat = np.full((1, 8, 8), 7.0)
    np.testing.assert_allclose(_resize(flat, 28), np.full((1, 28, 28), 7.0))
    rng = np.random.default_rng(1)
    img = rng.uniform(0, 16, (2, 8, 8))
    assert abs(_resize(img, 28).mean() - img.mean()) < 0.5
    # Up and back down keeps the picture (strong correlation with the original digit).
    from sklearn.datasets import load_digits

    digit = load_digits().images[:1]
    back = _resize(_resize(digit, 28), 8)
    assert np.corrcoef(digit.ravel(), back.ravel())[0, 1] > 0.95


def test_subset_and_one_hot():
    data = load_data(announce=None, cache_path=None).subset(10, 5)
    assert len(data.x_train) == 10 and len(data.y_test) == 5
    with pytest.raises(ValueError, match="n_train"):
        data.subset(0)
    encoded = one_hot(np.array([0, 3, 9]))
    assert encoded.dtype == np.float32 and encoded.shape == (3, 10)
    np.testing.assert_array_equal(encoded.argmax(1), [0, 3, 9])
    np.testing.assert_array_equal(encoded.sum(1), 1.0)


# --- the true reason for a wrong file, and what was expected ---------------------------

_EXPECTED = "expected a Keras-format mnist.npz with x_train, y_train, x_test, y_test"


def test_text_file_is_not_a_npz_archive_rather_than_pickled(tmp_path):
    """NumPy tries anything that is neither .npy nor zip as a pickle, and with
    allow_pickle=False calls a text file 'pickled data': the message gives the real reason."""
    text = tmp_path / "mnist.npz"
    text.write_text("x_train,y_train\n1,2\n")
    with pytest.raises(DataFileError) as info:
        load_npz(text)
    message = str(info.value)
    assert message == (f"{text}: not a .npz archive (NumPy could not read it as a zip "
                       f"file); {_EXPECTED}")
    assert "pickle" not in message


@pytest.mark.parametrize(("make", "reason"), [
    (lambda p: p.mkdir(), "is a directory"),
    (lambda p: p.write_bytes(b""), "is empty"),
    (lambda p: None, "no such file"),
])
def test_directory_empty_and_missing_paths_say_what_was_expected(tmp_path, make, reason):
    path = tmp_path / "mnist.npz"
    make(path)
    with pytest.raises(DataFileError) as info:
        load_npz(path)
    assert str(info.value) == f"{path}: {reason}; {_EXPECTED}"


def test_unreadable_file_names_the_reason(tmp_path, monkeypatch):
    path = _write(tmp_path)

    def refused(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    # data.py opens the file with the builtin open; chmod 000 would not stop root
    monkeypatch.setattr(data_module, "open", refused, raising=False)
    with pytest.raises(DataFileError) as info:
        load_npz(path)
    assert str(info.value) == f"{path}: cannot be read (Permission denied); {_EXPECTED}"


def test_archive_member_that_is_not_an_npy_array(tmp_path):
    import zipfile

    path = tmp_path / "mnist.npz"
    with zipfile.ZipFile(path, "w") as archive:
        for key, value in _arrays().items():
            if key == "y_test":
                archive.writestr(key, "0 1 2 3")  # a text member where an array belongs
            else:
                with archive.open(f"{key}.npy", "w") as member:
                    np.lib.format.write_array(member, value)
    with pytest.raises(DataFileError, match=r"mnist\.npz: y_test is not a \.npy array"):
        load_npz(path)
