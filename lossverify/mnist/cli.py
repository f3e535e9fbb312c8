"""``lossverify train | digits | bench``: the notes' MNIST experiments from the command line.

TensorFlow is imported inside the command functions, so ``lossverify --help`` stays fast,
and only after the data has been loaded, so a wrong ``--data`` is reported at once.

What a user sees when something goes wrong:

* a usage error (a bad ``--data`` file, an unknown loss, a checkpoint of other settings):
  one line ``lossverify COMMAND: error: ...`` on stderr, exit code 2;
* Ctrl-C: one line ``lossverify COMMAND: interrupted ...`` on stderr (for ``train``, which
  epoch of which experiment is saved and how to resume), exit code 130, no traceback;
* lossverify's own warnings (the double softmax, the pitfall detectors): one line each on
  stderr, without the line of source Python would show.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

__all__ = ["register"]

EXPERIMENTS = ("3", "4", "double-softmax", "all")


def _quiet_tensorflow() -> None:
    """Silence TensorFlow's C++ start-up chatter (CLI only; the library leaves it alone)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", metavar="MNIST_NPZ", default=None,
                   help="a Keras-format mnist.npz (default: ~/.keras/datasets/mnist.npz if "
                   "present, else scikit-learn's digits resized to 28x28; nothing is "
                   "downloaded)")
    p.add_argument("--out", default="./lossverify-out", type=Path,
                   help="output folder (default: %(default)s)")


def register(subparsers) -> None:
    """Add ``train``, ``digits`` and ``bench`` to the ``lossverify`` command line."""
    train = subparsers.add_parser(
        "train", help="train the notes' Experiment 3 (custom loop) and/or 4 (fit)",
        description="Train the notes' MNIST experiments. Experiment 3: the subclassed "
        "MyModel in a custom @tf.function loop. Experiment 4: the functional MyKerasModel "
        "with compile/fit. double-softmax: Experiment 3 with the notes' softmax output vs a "
        "logits output, and the accuracy the double softmax costs. all: the three, plus the "
        "digit grid. Runs resume from their checkpoint in --out.")
    train.add_argument("--experiment", choices=EXPERIMENTS, default="all",
                       help="which experiment (default: %(default)s)")
    train.add_argument("--loss", default="focal",
                       help="focal (the notes' FocalLoss class), focal-function, sparse-focal, "
                       "cce, scce, or module:attr (default: %(default)s)")
    train.add_argument("--gamma", type=float, default=2.0,
                       help="focal-loss gamma (default: %(default)s)")
    train.add_argument("--output", choices=("auto", "logits", "softmax"), default="auto",
                       help="model output: logits, or the notes' softmax. auto: logits for "
                       "the named losses (the focal losses apply softmax themselves; the "
                       "cross-entropies get from_logits=True), softmax for module:attr")
    train.add_argument("--sparse-labels", action="store_true",
                       help="give a module:attr loss integer labels instead of one-hot rows")
    train.add_argument("--epochs", type=_positive_int, default=5)
    train.add_argument("--batch-size", type=_positive_int, default=32)
    train.add_argument("--learning-rate", type=float, default=1e-3)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--limit-train", type=_positive_int, default=None, metavar="N",
                       help="use only the first N training images")
    train.add_argument("--limit-test", type=_positive_int, default=None, metavar="N",
                       help="use only the first N test images")
    train.add_argument("--fresh", action="store_true",
                       help="ignore existing checkpoints in --out and start over")
    train.add_argument("--quiet", action="store_true", help="no progress bars")
    _data_args(train)
    train.set_defaults(func=train_command)

    digits = subparsers.add_parser("digits", help="save the notes' 2x5 grid of digits as PNG")
    _data_args(digits)
    digits.set_defaults(func=digits_command)

    bench = subparsers.add_parser(
        "bench", help="benchmark table with a roofline estimate",
        description="Print the MNIST training-step benchmarks as a table of images/s, the "
        "ratios the issue asks for, and a roofline estimate (FLOPs per image vs a measured "
        "float32 matmul peak). Reads a pytest-benchmark JSON report, or measures a quick "
        "set in-process when none is given.")
    bench.add_argument("report", nargs="?", type=Path, default=None,
                       help="pytest-benchmark JSON (from `pytest benchmarks "
                       "--benchmark-json=...`); default: measure now")
    bench.add_argument("--compare", type=Path, default=None, metavar="PREVIOUS_JSON",
                       help="an earlier report to compare against")
    bench.add_argument("--out", default="./lossverify-out", type=Path,
                       help="where a fresh in-process measurement is saved as bench.json")
    bench.set_defaults(func=bench_command)


def _error(command: str, message: str) -> int:
    """Report a usage error as one line on stderr; the exit code for it (2)."""
    print(f"lossverify {command}: error: {message}", file=sys.stderr)
    return 2


def _finish_progress_line() -> None:
    """End a progress bar left mid-line on a terminal, so what follows starts a line."""
    if sys.stdout.isatty():
        print(flush=True)
    sys.stdout.flush()


def _load(args):
    """The data for ``args``, or :class:`DataFileError` with a message naming ``--data``.

    Runs before anything imports TensorFlow (this needs NumPy only), so a wrong ``--data``
    is reported within a second instead of after TensorFlow's start-up.
    """
    from lossverify.mnist.data import DataFileError, load_data

    try:
        data = load_data(args.data)
    except DataFileError as exc:
        where = "--data " if args.data is not None else "the Keras cache "
        raise DataFileError(f"{where}{exc}") from exc
    if getattr(args, "limit_train", None) or getattr(args, "limit_test", None):
        data = data.subset(args.limit_train, args.limit_test)
    return data


def digits_command(args) -> int:
    from lossverify.mnist.data import DataFileError

    try:
        data = _load(args)
    except DataFileError as exc:
        return _error("digits", str(exc))
    from lossverify.mnist.plots import save_digit_grid

    path = args.out / "digits.png"
    save_digit_grid(data.x_train, data.y_train, path)
    print(f"Saved the 2x5 digit grid to {path}")
    return 0


@contextlib.contextmanager
def _one_line_warnings(command: str) -> Iterator[None]:
    """Show lossverify's own warnings as one line on stderr.

    Python's default display adds the file, the line number and the line of source the
    warning is attributed to, which means nothing to someone running the command. Other
    packages' warnings keep the default display.
    """
    default = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if category.__module__.split(".")[0] == "lossverify":
            print(f"lossverify {command}: {category.__name__}: {message}", file=sys.stderr,
                  flush=True)
        else:
            default(message, category, filename, lineno, file, line)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


def _resume_hint(args, epochs_saved: int) -> str:
    """What to run next, true for ``--fresh`` too (which would start over, not resume)."""
    if epochs_saved == 0:
        return "run the same command to start it again"
    if args.fresh:
        return "run the same command without --fresh to resume"
    return "run the same command to resume"


def _interrupted(message: str) -> int:
    """Report Ctrl-C as one line on stderr; the exit code for it (130, as a shell's)."""
    _finish_progress_line()
    print(message, file=sys.stderr, flush=True)
    return 130


def train_command(args) -> int:
    """``lossverify train``; Ctrl-C ends it with exit code 130 and says how to resume."""
    _quiet_tensorflow()
    from lossverify.mnist.data import DataFileError

    try:
        data = _load(args)
        import lossverify.mnist.train  # noqa: F401  (TensorFlow's start-up: the slow part)
    except DataFileError as exc:
        return _error("train", str(exc))
    except KeyboardInterrupt:
        return _interrupted("lossverify train: interrupted while starting up, before any "
                            "training")
    try:
        with _one_line_warnings("train"):
            return _train(args, data)
    except KeyboardInterrupt:  # outside a run (_train reports those): between two, say
        return _interrupted(f"lossverify train: interrupted outside training; completed "
                            f"epochs are saved under {args.out}; {_resume_hint(args, 1)}")


def _train(args, data) -> int:
    """Train the experiments ``args`` asks for on ``data``; the exit code."""
    from lossverify._io import write_json
    from lossverify.mnist.plots import save_digit_grid
    from lossverify.mnist.step import resolve_loss
    from lossverify.mnist.train import RunConfig, TrainingInterrupted, train_run

    logits = args.output == "logits" or (args.output == "auto" and ":" not in args.loss)
    try:
        choice = resolve_loss(args.loss, logits=logits, gamma=args.gamma,
                              sparse_labels=args.sparse_labels)
    except ValueError as exc:
        return _error("train", str(exc))
    wanted = {"3", "4", "double-softmax"} if args.experiment == "all" else {args.experiment}
    if "double-softmax" in wanted and not choice.applies_softmax:
        msg = (f"the double-softmax experiment needs a loss that applies softmax itself "
               f"(focal, focal-function, sparse-focal); {args.loss!r} does not")
        if args.experiment == "double-softmax":
            return _error("train", msg)
        print(f"Skipping double-softmax: {msg}.")
        wanted.discard("double-softmax")

    common = dict(loss=args.loss, gamma=args.gamma, sparse_labels=args.sparse_labels,
                  epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
                  learning_rate=args.learning_rate)
    def run_name(loop, logits):
        experiment = "exp3-custom-loop" if loop == "custom" else "exp4-fit"
        return f"{experiment}-{'logits' if logits else 'softmax'}"

    runs = {}  # run folder name -> settings; the double-softmax pair shares Experiment 3's
    if "3" in wanted:
        runs[run_name("custom", logits)] = RunConfig(loop="custom", model="subclassed",
                                                     logits=logits, **common)
    if "4" in wanted:
        runs[run_name("fit", logits)] = RunConfig(loop="fit", model="functional",
                                                  logits=logits, **common)
    if "double-softmax" in wanted:
        for arm in (True, False):
            runs[run_name("custom", arm)] = RunConfig(loop="custom", model="subclassed",
                                                      logits=arm, **common)

    summary = {"data": data.source, "runs": {}}
    if args.experiment == "all":
        path = args.out / "digits.png"
        save_digit_grid(data.x_train, data.y_train, path)
        print(f"Saved the 2x5 digit grid to {path}")
    for name, config in runs.items():
        title = ("Experiment 3 (custom @tf.function loop, MyModel)" if config.loop == "custom"
                 else "Experiment 4 (compile/fit, MyKerasModel)")
        print(f"\n== {name}: {title}, loss {args.loss}, "
              f"{'logits' if config.logits else 'softmax'} output ==")
        try:
            history = train_run(data, config, args.out / name, fresh=args.fresh,
                                verbose=0 if args.quiet else 1)
        except ValueError as exc:
            return _error("train", str(exc))
        except TrainingInterrupted as exc:
            if exc.epochs_saved == 0:
                where = f"in experiment {name} before its first epoch was saved"
            else:
                where = (f"after epoch {exc.epochs_saved} of {exc.epochs} of experiment "
                         f"{name} (saved in {exc.run_dir})")
            return _interrupted(f"lossverify train: interrupted {where}; "
                                f"{_resume_hint(args, exc.epochs_saved)}")
        summary["runs"][name] = {
            "config": dataclasses.asdict(config),
            "test_accuracy": history["test_accuracy"][-1],
            "train_seconds": sum(history["seconds"]),
            "epochs": len(history["epoch"]),
        }
        print(f"Saved {args.out / name}/history.json and curves.png")

    print("\nSummary (" + data.source + ")")
    print(f"{'run':<30}{'epochs':>7}{'test accuracy':>15}{'train time':>12}")
    for name, r in summary["runs"].items():
        print(f"{name:<30}{r['epochs']:>7}{100 * r['test_accuracy']:>14.2f}%"
              f"{r['train_seconds']:>11.1f}s")
    if "double-softmax" in wanted:
        good = summary["runs"][run_name("custom", True)]["test_accuracy"]
        bad = summary["runs"][run_name("custom", False)]["test_accuracy"]
        summary["double_softmax_cost"] = good - bad
        print(f"Double softmax costs {100 * (good - bad):+.2f} points of test accuracy "
              f"({100 * bad:.2f}% with the notes' softmax output vs {100 * good:.2f}% with "
              f"logits, same seed, {args.epochs} epochs).")
    write_json(args.out / "summary.json", summary)
    return 0


def bench_command(args) -> int:
    """``lossverify bench``; Ctrl-C ends it with exit code 130 and a one-line message."""
    _quiet_tensorflow()
    try:
        from lossverify.mnist import bench

        return bench.main(args.report, compare=args.compare, out=args.out)
    except KeyboardInterrupt:
        return _interrupted("lossverify bench: interrupted; no report was saved (an "
                            "in-process measurement is saved once every configuration is done)")
