"""Experiments 3 and 4 on tiny data: one epoch each, resume, atomic checkpoints, warnings."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from lossverify.mnist import train as train_module
from lossverify.mnist.data import load_data
from lossverify.mnist.models import build_model
from lossverify.mnist.step import make_train_step, resolve_loss
from lossverify.mnist.train import DoubleSoftmaxWarning, RunConfig, TrainingInterrupted, train_run

_TINY = dict(epochs=1, batch_size=16)


@pytest.fixture(scope="module")
def tiny():
    return load_data(cache_path=None, announce=None).subset(64, 32)


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize(("loop", "model", "loss"), [
    ("custom", "subclassed", "focal"),
    ("fit", "functional", "focal-function"),
])
def test_one_epoch_per_loop_writes_history_curves_and_checkpoint(tiny, tmp_path, loop, model,
                                                                  loss):
    lines = []
    history = train_run(tiny, RunConfig(loop=loop, model=model, loss=loss, **_TINY), tmp_path,
                        verbose=0, echo=lines.append)
    assert history["epoch"] == [1]
    assert np.isfinite(history["loss"][0]) and history["loss"][0] > 0
    assert 0.0 <= history["test_accuracy"][0] <= 1.0
    assert lines[-1].startswith("Epoch 1, Loss: ") and "Test Accuracy: " in lines[-1]
    saved = json.loads((tmp_path / "history.json").read_text())
    assert saved["history"] == history and saved["epoch"] == 1
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with np.load(tmp_path / "checkpoint.npz", allow_pickle=False) as ckpt:
        assert json.loads(str(ckpt["meta"]))["epoch"] == 1
    assert _leftovers(tmp_path) == []


def test_interrupted_run_resumes_at_epoch_2_and_matches_an_uninterrupted_one(tiny, tmp_path):
    config = RunConfig(loop="custom", epochs=2, batch_size=16)
    straight = train_run(tiny, config, tmp_path / "straight", verbose=0, echo=lambda _: None)

    first = train_run(tiny, config, tmp_path / "resumed", verbose=0, stop_after_epoch=1,
                      echo=lambda _: None)
    assert first["epoch"] == [1]
    lines = []
    resumed = train_run(tiny, config, tmp_path / "resumed", verbose=0, echo=lines.append)
    assert lines[0].startswith("Resuming") and "after epoch 1" in lines[0]
    assert [line.split(",")[0] for line in lines[1:]] == ["Epoch 1", "Epoch 2"]
    assert resumed["epoch"] == [1, 2]
    for key in ("loss", "accuracy", "test_loss", "test_accuracy"):
        np.testing.assert_allclose(resumed[key], straight[key], rtol=1e-4, err_msg=key)
    assert _leftovers(tmp_path / "resumed") == []


def test_crash_while_checkpointing_keeps_the_previous_checkpoint(tiny, tmp_path, monkeypatch):
    config = RunConfig(loop="custom", epochs=2, batch_size=16)
    train_run(tiny, config, tmp_path, verbose=0, stop_after_epoch=1, echo=lambda _: None)
    before = (tmp_path / "checkpoint.npz").read_bytes()

    def dies_half_way(fh, **arrays):
        fh.write(b"PK\x03\x04 half an archive")
        raise KeyboardInterrupt  # the user presses Ctrl-C mid-write

    monkeypatch.setattr(train_module.np, "savez", dies_half_way)
    with pytest.raises(KeyboardInterrupt) as info:
        train_run(tiny, config, tmp_path, verbose=0, echo=lambda _: None)
    assert isinstance(info.value, TrainingInterrupted) and info.value.epochs_saved == 1
    assert (tmp_path / "checkpoint.npz").read_bytes() == before
    assert _leftovers(tmp_path) == []
    monkeypatch.undo()
    lines = []
    train_run(tiny, config, tmp_path, verbose=0, echo=lines.append)
    assert "after epoch 1" in lines[0]


def test_ctrl_c_reports_the_epochs_a_resume_would_find(tiny, tmp_path, monkeypatch):
    config = RunConfig(loop="custom", epochs=3, batch_size=16)
    train_run(tiny, config, tmp_path, verbose=0, stop_after_epoch=2, echo=lambda _: None)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt  # Ctrl-C before the next checkpoint is written

    monkeypatch.setattr(train_module, "_save_checkpoint", interrupted)
    with pytest.raises(TrainingInterrupted) as info:
        train_run(tiny, config, tmp_path, verbose=0, echo=lambda _: None)
    assert (info.value.epochs_saved, info.value.epochs) == (2, 3)
    assert info.value.run_dir == tmp_path
    # A fresh run has saved nothing of its own: the older checkpoint does not count.
    with pytest.raises(TrainingInterrupted) as info:
        train_run(tiny, config, tmp_path, verbose=0, fresh=True, echo=lambda _: None)
    assert info.value.epochs_saved == 0


def test_fit_progress_headers_count_to_the_runs_epochs_and_change_nothing(tiny, tmp_path,
                                                                          capsys):
    config = RunConfig(loop="fit", model="functional", epochs=2, batch_size=16)
    quiet = train_run(tiny, config, tmp_path / "quiet", verbose=0, echo=lambda _: None)
    capsys.readouterr()
    shown = train_run(tiny, config, tmp_path / "shown", verbose=1, echo=lambda _: None)
    assert re.findall(r"Epoch (\d+)/(\d+)", capsys.readouterr().out) == [("1", "2"), ("2", "2")]
    for key in ("loss", "accuracy", "test_loss", "test_accuracy"):
        np.testing.assert_allclose(shown[key], quiet[key], rtol=1e-6, err_msg=key)


def test_checkpoint_of_other_settings_is_refused(tiny, tmp_path):
    train_run(tiny, RunConfig(**_TINY), tmp_path, verbose=0, echo=lambda _: None)
    with pytest.raises(ValueError, match=r"checkpoint\.npz: holds a run with different "
                                         r"settings \(gamma\).*--fresh"):
        train_run(tiny, RunConfig(gamma=1.0, **_TINY), tmp_path, verbose=0)
    history = train_run(tiny, RunConfig(gamma=1.0, **_TINY), tmp_path, verbose=0, fresh=True,
                        echo=lambda _: None)
    assert history["epoch"] == [1]


def test_double_softmax_warning_only_for_softmax_applying_loss_on_softmax_output():
    softmax_model = build_model("functional", logits=False)
    logits_model = build_model("functional", logits=True)
    focal = resolve_loss("focal", logits=False)
    cce = resolve_loss("cce", logits=False)
    with pytest.warns(DoubleSoftmaxWarning, match="double softmax.*'focal'.*--output logits"):
        assert train_module._warn_double_softmax(focal, softmax_model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert train_module._warn_double_softmax(focal, logits_model) is None
        assert train_module._warn_double_softmax(cce, softmax_model) is None


def test_training_with_the_notes_softmax_output_warns(tiny, tmp_path):
    with pytest.warns(DoubleSoftmaxWarning):
        train_run(tiny, RunConfig(logits=False, **_TINY), tmp_path, verbose=0,
                  echo=lambda _: None)


def test_eager_function_and_xla_steps_agree():
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = tf.constant(rng.uniform(0, 1, (8, 28, 28, 1)).astype(np.float32))
    y = tf.constant(np.eye(10, dtype=np.float32)[rng.integers(0, 10, 8)])
    start = build_model("functional", logits=True).get_weights()
    losses, weights = {}, {}
    for mode in ("eager", "function", "xla"):
        model = build_model("functional", logits=True)
        model.set_weights(start)
        step = make_train_step(model, resolve_loss("focal", logits=True).fn,
                               keras.optimizers.Adam(), keras.metrics.Mean(),
                               keras.metrics.CategoricalAccuracy(), mode=mode)
        losses[mode] = [float(step(x, y)) for _ in range(2)]
        weights[mode] = model.get_weights()[-1]
    np.testing.assert_allclose(losses["function"], losses["eager"], rtol=1e-5)
    np.testing.assert_allclose(losses["xla"], losses["eager"], rtol=1e-4)
    np.testing.assert_allclose(weights["xla"], weights["eager"], rtol=1e-4, atol=1e-6)
    assert losses["eager"][1] != losses["eager"][0]  # the first step changed the weights


def test_loss_choices():
    assert resolve_loss("lossverify.notes_losses:FocalLoss", logits=True).fn.gamma == 2.0
    assert resolve_loss("scce", logits=True).sparse
    with pytest.raises(ValueError, match="loss: expected one of focal"):
        resolve_loss("hinge-ish", logits=True)
    with pytest.raises(ValueError, match="cannot import 'nope' from module 'lossverify'"):
        resolve_loss("lossverify:nope", logits=True)


_MIRRORED = textwrap.dedent("""
    import json, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from lossverify.mnist.data import load_data
    from lossverify.mnist.step import choose_strategy
    from lossverify.mnist.train import RunConfig, train_run
    replicas = choose_strategy().num_replicas_in_sync
    data = load_data(cache_path=None, announce=None).subset(64, 32)
    h = train_run(data, RunConfig(loop="custom", epochs=2, batch_size=16), {out!r},
                  verbose=0, echo=lambda _: None)
    print(json.dumps({{"replicas": replicas, "history": h}}))
""")


def test_custom_loop_under_mirrored_strategy_on_two_logical_cpus(tmp_path):
    script = _MIRRORED.format(out=str(tmp_path))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=180, env={**__import__("os").environ,
                                            "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2
    history = result["history"]
    assert history["epoch"] == [1, 2]
    assert all(np.isfinite(history["loss"]))
    assert history["loss"][1] < history["loss"][0]  # it learns
    assert (tmp_path / "checkpoint.npz").exists()


def test_training_runs_the_pitfall_detectors(tiny, tmp_path):
    """`train` runs lossverify.pitfalls on the model, the loss and the labels: integer
    labels for a dense loss are reported; the double softmax is reported once (by
    DoubleSoftmaxWarning, not again as a PitfallWarning)."""
    from lossverify.pitfalls import PitfallWarning

    # the warning comes before the first step, which then fails on the rank mismatch
    with pytest.warns(PitfallWarning, match="sparse-labels-for-dense-loss"), \
            pytest.raises(ValueError, match="same rank"):
        train_run(tiny, RunConfig(loss="keras.losses:categorical_crossentropy",
                                  sparse_labels=True, logits=False, **_TINY),
                  tmp_path / "sparse", verbose=0, echo=lambda _: None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train_run(tiny, RunConfig(logits=False, **_TINY), tmp_path / "double", verbose=0,
                  echo=lambda _: None)
    kinds = [type(w.message).__name__ for w in caught]
    assert kinds.count("DoubleSoftmaxWarning") == 1 and "PitfallWarning" not in kinds, kinds


def test_correct_training_raises_no_pitfall(tiny, tmp_path):
    from lossverify.pitfalls import PitfallWarning

    with warnings.catch_warnings():
        warnings.simplefilter("error", PitfallWarning)
        train_run(tiny, RunConfig(**_TINY), tmp_path, verbose=0, echo=lambda _: None)
