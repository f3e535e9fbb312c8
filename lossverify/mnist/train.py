"""The notes' Experiment 3 (custom ``@tf.function`` loop) and Experiment 4 (``compile``/``fit``).

A run lives in its own folder::

    <run_dir>/checkpoint.npz   weights, optimizer state, epochs done, history, run settings
    <run_dir>/history.json     per epoch: loss, accuracy, test loss, test accuracy, seconds
    <run_dir>/curves.png       the curves of history.json

The checkpoint is one ``.npz`` written atomically after every epoch (plain arrays, the
metadata as a JSON string; read back with ``allow_pickle=False``). A run started again
with the same settings resumes after the last completed epoch; the per-epoch shuffle seed
depends on ``(seed, epoch)`` only, so a resumed run sees the batches an uninterrupted run
would have seen. Different settings in the same folder are refused (use ``fresh=True``).

Ctrl-C (``KeyboardInterrupt``) during a run is re-raised as :class:`TrainingInterrupted`,
which says how many epochs the checkpoint on disk holds, i.e. where a resume will start.
"""

from __future__ import annotations

import contextlib
import json
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import keras
import numpy as np

from lossverify._io import atomic_write, write_json
from lossverify.mnist.data import MnistData
from lossverify.mnist.models import build_model
from lossverify.mnist.plots import save_curves
from lossverify.mnist.step import (
    LossChoice,
    accuracy_metric,
    choose_strategy,
    epoch_dataset,
    labels_for,
    make_eval_step,
    make_train_step,
    resolve_loss,
)

__all__ = ["DoubleSoftmaxWarning", "RunConfig", "TrainingInterrupted", "train_run"]

LOOPS = ("custom", "fit")
_CHECKPOINT = "checkpoint.npz"
_HISTORY_KEYS = ("epoch", "loss", "accuracy", "test_loss", "test_accuracy", "seconds")


class DoubleSoftmaxWarning(UserWarning):
    """A loss that applies softmax itself was given a model whose output is a softmax."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`train_run`, with what a resume will find.

    ``epochs_saved`` is the number of epochs in the run's checkpoint, read from disk when
    the interruption happened: where running again without ``fresh`` resumes. It is 0 if
    there is no checkpoint of these settings, or under ``fresh=True`` before the run has
    replaced the older checkpoint with its first epoch. A subclass of
    ``KeyboardInterrupt``, so code that does not know it still stops.
    """

    def __init__(self, run_dir: Path, epochs_saved: int, epochs: int) -> None:
        super().__init__(f"{run_dir}: interrupted with {epochs_saved} of {epochs} epochs saved")
        self.run_dir = run_dir
        self.epochs_saved = epochs_saved
        self.epochs = epochs


class _RunProgbar(keras.callbacks.ProgbarLogger):
    """Keras's ``fit`` progress bar, with epoch headers that count to the run's epochs.

    Experiment 4 calls ``fit`` once per epoch (``epochs=k + 1, initial_epoch=k``) so that
    each epoch gets its own ``(seed, epoch)`` shuffle; left alone, Keras would head epoch
    ``k + 1`` as ``Epoch k+1/k+1`` (and print no header for the first one).
    """

    def __init__(self, total_epochs: int) -> None:
        super().__init__()
        self._total_epochs = total_epochs

    def set_params(self, params: dict) -> None:
        super().set_params(params)
        self.epochs = self._total_epochs


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a training run (``epochs`` may grow on resume)."""

    loop: str = "custom"            # "custom" (Experiment 3) or "fit" (Experiment 4)
    model: str = "subclassed"       # "subclassed" (MyModel) or "functional" (MyKerasModel)
    loss: str = "focal"
    gamma: float = 2.0
    logits: bool = True             # model output: logits (True) or the notes' softmax
    sparse_labels: bool = False     # only for module:attr losses
    epochs: int = 5
    batch_size: int = 32
    seed: int = 0
    learning_rate: float = 1e-3

    def fingerprint(self, data: MnistData) -> dict:
        """The settings a checkpoint must match to be resumed (all but ``epochs``)."""
        settings = {k: v for k, v in asdict(self).items() if k != "epochs"}
        return {**settings, "data": data.source, "n_train": len(data.x_train),
                "n_test": len(data.x_test)}


def _model_ends_in_softmax(model: keras.Model) -> bool:
    """True if the model's last layer is a softmax (a ``Softmax`` layer or activation)."""
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    if not layers:
        return False
    last = layers[-1]
    if isinstance(last, keras.layers.Softmax):
        return True
    return getattr(last, "activation", None) is keras.activations.softmax


def _check_pitfalls(model: keras.Model, choice: LossChoice, y_sample: np.ndarray, *,
                    double_softmax_warned: bool) -> None:
    """Run :mod:`lossverify.pitfalls` on the model, the loss and a sample of the labels
    the loss will get (format, range, ``from_logits``), re-emitting each warning once:
    the double softmax is already reported by :class:`DoubleSoftmaxWarning`."""
    from lossverify import pitfalls

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", pitfalls.PitfallWarning)
        found = pitfalls.check_model_and_loss(model, choice.fn, y_true=y_sample)
    del caught  # re-emitted below, attributed to the caller
    for pitfall in found:
        if double_softmax_warned and pitfall.code in ("double-softmax",
                                                      "from-logits-on-probabilities"):
            continue
        warnings.warn(f"{pitfall.code}: {pitfall.message}", pitfalls.PitfallWarning,
                      stacklevel=4)


def _warn_double_softmax(choice: LossChoice, model: keras.Model) -> str | None:
    if not (choice.applies_softmax and _model_ends_in_softmax(model)):
        return None
    message = (
        f"double softmax: the loss {choice.name!r} applies softmax to y_pred itself, and the "
        "model's output layer already ends in a softmax, so training sees "
        "softmax(softmax(scores)). It trains, but the loss and its gradients are squashed "
        "(probabilities can never exceed e/(e+9) ~ 0.23). Use a logits output "
        "(--output logits); `--experiment double-softmax` measures the cost."
    )
    # Attributed to train_run's caller (frames: this one, _epochs, train_run, caller).
    warnings.warn(message, DoubleSoftmaxWarning, stacklevel=4)
    return message


# --- checkpoints ----------------------------------------------------------------------


def _save_checkpoint(path: Path, model, optimizer, meta: dict) -> None:
    arrays = {"meta": np.array(json.dumps(meta, sort_keys=True))}
    for i, w in enumerate(model.get_weights()):
        arrays[f"model_{i:03d}"] = w
    for i, v in enumerate(optimizer.variables):
        arrays[f"optimizer_{i:03d}"] = keras.ops.convert_to_numpy(v)
    with atomic_write(path, "wb") as fh:
        np.savez(fh, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds oddly


def _read_checkpoint(path: Path) -> tuple[dict, list[np.ndarray], list[np.ndarray]]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            meta = json.loads(str(archive["meta"]))
            names = sorted(archive.files)
            weights = [archive[n] for n in names if n.startswith("model_")]
            opt = [archive[n] for n in names if n.startswith("optimizer_")]
    except Exception as exc:  # any unreadable checkpoint is reported the same way
        raise ValueError(
            f"{path}: unreadable checkpoint ({exc}); delete it or pass --fresh"
        ) from exc
    return meta, weights, opt


def _checkpoint_epochs(path: Path, fingerprint: dict) -> int:
    """The epochs held by the checkpoint at ``path`` if it is a run of ``fingerprint``'s
    settings (the one a resume would continue), else 0."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            meta = json.loads(str(archive["meta"]))
    except Exception:  # missing or unreadable: nothing to resume from
        return 0
    return int(meta["epoch"]) if meta.get("fingerprint") == fingerprint else 0


def _restore(model, optimizer, weights, opt_values, path: Path) -> None:
    if not optimizer.built:
        optimizer.build(model.trainable_variables)
    if len(opt_values) != len(optimizer.variables):
        raise ValueError(f"{path}: optimizer state does not match this model; pass --fresh")
    model.set_weights(weights)
    for var, value in zip(optimizer.variables, opt_values, strict=True):
        var.assign(value)


# --- the run --------------------------------------------------------------------------


def _epoch_line(h: dict, i: int) -> str:
    """The notes' per-epoch line (accuracies in percent)."""
    return (
        f"Epoch {h['epoch'][i]}, Loss: {h['loss'][i]:.4f}, "
        f"Accuracy: {100 * h['accuracy'][i]:.2f}, Test Loss: {h['test_loss'][i]:.4f}, "
        f"Test Accuracy: {100 * h['test_accuracy'][i]:.2f}"
    )


def train_run(
    data: MnistData,
    config: RunConfig,
    run_dir: str | Path,
    *,
    fresh: bool = False,
    verbose: int = 1,
    stop_after_epoch: int | None = None,
    echo: Callable[[str], None] = print,
) -> dict:
    """Train (or resume) one run; return its history (accuracies as fractions).

    ``stop_after_epoch`` ends the run after that epoch as an interruption would (the
    checkpoint is left for a later resume). ``verbose=1`` shows a progress bar per epoch.
    Ctrl-C raises :class:`TrainingInterrupted` (a ``KeyboardInterrupt``) naming the
    epochs the checkpoint holds.
    """
    if config.loop not in LOOPS:
        raise ValueError(f"loop: expected one of {', '.join(LOOPS)}, got {config.loop!r}")
    if config.epochs < 1:
        raise ValueError(f"epochs: expected a positive integer, got {config.epochs}")
    run_dir = Path(run_dir)
    ckpt_path = run_dir / _CHECKPOINT
    fingerprint = config.fingerprint(data)
    choice = resolve_loss(config.loss, logits=config.logits, gamma=config.gamma,
                          sparse_labels=config.sparse_labels)

    history: dict[str, list] = {k: [] for k in _HISTORY_KEYS}
    start = 0
    saved: tuple[list[np.ndarray], list[np.ndarray]] | None = None
    if ckpt_path.exists() and not fresh:
        meta, weights, opt_values = _read_checkpoint(ckpt_path)
        if meta["fingerprint"] != fingerprint:
            diff = sorted(k for k in fingerprint if meta["fingerprint"].get(k) != fingerprint[k])
            raise ValueError(
                f"{ckpt_path}: holds a run with different settings ({', '.join(diff)}); "
                "pass --fresh to start over or choose another --out"
            )
        history, start, saved = meta["history"], meta["epoch"], (weights, opt_values)

    wrote_checkpoint = False  # under fresh=True, an older checkpoint is not this run's
    try:
        for epochs_done in _epochs(data, config, run_dir, choice, fingerprint, history,
                                   start=start, saved=saved, verbose=verbose, echo=echo):
            wrote_checkpoint = True
            if stop_after_epoch is not None and epochs_done >= stop_after_epoch:
                break
        if history["epoch"]:
            title = ("Experiment 3: custom loop" if config.loop == "custom"
                     else "Experiment 4: fit")
            save_curves(history, run_dir / "curves.png",
                        f"{title}, {choice.name}, "
                        f"{'logits' if config.logits else 'softmax'} output")
    except KeyboardInterrupt as exc:
        # What a resume will find is what is on disk: read it rather than count epochs
        # here, which could be one behind if Ctrl-C lands just after a checkpoint's write.
        own = wrote_checkpoint or not fresh
        epochs_saved = _checkpoint_epochs(ckpt_path, fingerprint) if own else 0
        raise TrainingInterrupted(run_dir, epochs_saved, config.epochs) from exc
    return history


def _epochs(data: MnistData, config: RunConfig, run_dir: Path, choice: LossChoice,
            fingerprint: dict, history: dict[str, list], *, start: int,
            saved: tuple[list[np.ndarray], list[np.ndarray]] | None, verbose: int,
            echo: Callable[[str], None]) -> Iterator[int]:
    """Build the model (restoring ``saved``), then train epoch by epoch from ``start``.

    Each epoch's results are appended to ``history`` and checkpointed, then its line is
    echoed and the number of epochs the checkpoint holds is yielded.
    """
    ckpt_path = run_dir / _CHECKPOINT
    keras.utils.set_random_seed(config.seed)
    strategy = choose_strategy()
    scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
    with scope:
        model = build_model(config.model, logits=config.logits)
        optimizer = keras.optimizers.Adam(learning_rate=config.learning_rate)
        # Create the slots now, in the strategy's scope: built lazily inside strategy.run
        # they are per-replica and Keras's distributed update fails (keras-team/keras#23085).
        optimizer.build(model.trainable_variables)
        if config.loop == "fit":
            model.compile(optimizer=optimizer, loss=choice.fn,
                          metrics=[accuracy_metric(choice, "accuracy")])
    warned = _warn_double_softmax(choice, model)

    if saved is not None:
        with scope:
            _restore(model, optimizer, *saved, ckpt_path)
        echo(f"Resuming {run_dir} after epoch {start} (of {config.epochs}).")
        for i in range(start):
            echo(_epoch_line(history, i))

    y_train = labels_for(choice, data.y_train)
    _check_pitfalls(model, choice, y_train[:512], double_softmax_warned=warned is not None)
    y_test = labels_for(choice, data.y_test)
    test_ds = epoch_dataset(data.x_test, y_test, config.batch_size)
    if config.loop == "custom":
        metrics = {k: (keras.metrics.Mean(name=k) if "loss" in k else accuracy_metric(choice, k))
                   for k in ("loss", "accuracy", "test_loss", "test_accuracy")}
        train_step = make_train_step(model, choice.fn, optimizer, metrics["loss"],
                                     metrics["accuracy"], strategy=strategy)
        test_step = make_eval_step(model, choice.fn, metrics["test_loss"],
                                   metrics["test_accuracy"])

    for epoch in range(start, config.epochs):
        t0 = time.perf_counter()
        train_ds = epoch_dataset(data.x_train, y_train, config.batch_size, seed=config.seed,
                                 epoch=epoch, drop_remainder=strategy is not None)
        if config.loop == "custom":
            if verbose:
                echo(f"Epoch {epoch + 1}/{config.epochs}")
            values = _custom_epoch(train_ds, test_ds, train_step, test_step, metrics,
                                   strategy, verbose)
        else:
            fitted = model.fit(train_ds, epochs=epoch + 1, initial_epoch=epoch,
                               validation_data=test_ds, shuffle=False, verbose=verbose,
                               callbacks=[_RunProgbar(config.epochs)] if verbose else None)
            h = fitted.history
            values = {"loss": h["loss"][-1], "accuracy": h["accuracy"][-1],
                      "test_loss": h["val_loss"][-1], "test_accuracy": h["val_accuracy"][-1]}
        values = {k: float(v) for k, v in values.items()}
        values.update(epoch=epoch + 1, seconds=time.perf_counter() - t0)
        for key in _HISTORY_KEYS:
            history[key].append(values[key])
        meta = {"epoch": epoch + 1, "history": history, "fingerprint": fingerprint}
        _save_checkpoint(ckpt_path, model, optimizer, meta)
        write_json(run_dir / "history.json", {"config": asdict(config), **meta})
        echo(_epoch_line(history, epoch))  # after the save: a printed epoch is a saved one
        yield epoch + 1


def _custom_epoch(train_ds, test_ds, train_step, test_step, metrics, strategy, verbose):
    for metric in metrics.values():
        metric.reset_state()  # Keras 3 spelling of the notes' reset_states()
    if strategy is not None:
        train_ds = strategy.experimental_distribute_dataset(train_ds)
    steps = int(train_ds.cardinality()) if strategy is None else None
    bar = keras.utils.Progbar(steps, verbose=verbose, stateful_metrics=["loss", "accuracy"])
    for i, (images, labels) in enumerate(train_ds):
        train_step(images, labels)
        if verbose and (i % 10 == 0 or i + 1 == steps):  # reading metrics syncs: not each step
            bar.update(i + 1, [("loss", float(metrics["loss"].result())),
                               ("accuracy", float(metrics["accuracy"].result()))])
    for images, labels in test_ds:
        test_step(images, labels)
    return {k: m.result() for k, m in metrics.items()}

