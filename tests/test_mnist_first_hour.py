"""``lossverify train | digits | bench`` as a user meets them: run as ``python -m
lossverify`` in a subprocess, wrong ``--data``, Ctrl-C, resume, warnings, progress.

The training runs use a synthetic ``mnist.npz`` of a few dozen images, so an epoch takes
a fraction of a second; most of each run is TensorFlow's start-up.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

#: Lines reach the pipes as they are printed, so a test can react to one.
_ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}
#: A safety net against a hung child, never an assertion about speed.
_TIMEOUT = 600
_EXPECTED = "expected a Keras-format mnist.npz with x_train, y_train, x_test, y_test"


def _tiny_mnist(folder: Path, n_train: int = 64, n_test: int = 32) -> Path:
    """A Keras-format mnist.npz of random images with every class present."""
    rng = np.random.default_rng(0)
    path = folder / "tiny-mnist.npz"
    np.savez(path,
             x_train=rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
             y_train=np.arange(n_train) % 10,
             x_test=rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
             y_test=np.arange(n_test) % 10)
    return path


def _lossverify(*argv: str, python_flags: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *python_flags, "-m", "lossverify", *argv],
                          capture_output=True, text=True, env=_ENV, timeout=_TIMEOUT)


def _as_from_a_terminal() -> None:
    """In the child, before exec: SIGINT handled by default, as in a user's terminal. A
    test run started in the background of a non-interactive shell (``cmd &``) inherits
    SIGINT *ignored*, and Python then never raises KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _interrupt(argv: list[str], marker: str, *, stream: str = "stdout"):
    """Run ``python -m lossverify *argv``, press Ctrl-C (SIGINT) as soon as a line of
    ``stream`` contains ``marker``, and return ``(exit code, stdout, stderr)``."""
    proc = subprocess.Popen([sys.executable, "-m", "lossverify", *argv],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_ENV, preexec_fn=_as_from_a_terminal)
    lines: queue.Queue[tuple[str, str | None]] = queue.Queue()
    captured: dict[str, list[str]] = {"stdout": [], "stderr": []}

    def pump(name, pipe):
        for line in pipe:
            captured[name].append(line)
            lines.put((name, line))
        lines.put((name, None))

    pumps = [threading.Thread(target=pump, args=(name, getattr(proc, name)), daemon=True)
             for name in captured]
    for thread in pumps:
        thread.start()
    deadline = time.monotonic() + _TIMEOUT
    try:
        while True:
            try:
                name, line = lines.get(timeout=max(deadline - time.monotonic(), 0.1))
            except queue.Empty:
                pytest.fail(f"no {marker!r} on {stream}; stderr:\n" + "".join(captured["stderr"]))
            if name == stream and line is None:
                proc.wait(timeout=_TIMEOUT)
                pytest.fail(f"exited ({proc.returncode}) before {marker!r} on {stream}; "
                            "stderr:\n" + "".join(captured["stderr"]))
            if name == stream and marker in line:
                break
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    for thread in pumps:
        thread.join(timeout=_TIMEOUT)
    return code, "".join(captured["stdout"]), "".join(captured["stderr"])


def _checkpoint_epochs(run_dir: Path) -> int:
    with np.load(run_dir / "checkpoint.npz", allow_pickle=False) as archive:
        return json.loads(str(archive["meta"]))["epoch"]


# --- a wrong --data: reported at once, as one line, with exit code 2 ---------------------


def _text_file(path: Path) -> None:
    path.write_text("this is not an archive\n")


def _object_array(path: Path) -> None:
    np.savez(path, x_train=np.zeros((2, 28, 28), np.uint8), y_train=np.zeros(2, np.int64),
             x_test=np.zeros((2, 28, 28), np.uint8),
             y_test=np.array([{"label": 0}, {"label": 1}], dtype=object))


_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def _unreadable(path: Path) -> None:
    path.write_bytes(b"PK\x03\x04")
    path.chmod(0)


@pytest.mark.parametrize("command", ["train", "digits"])
@pytest.mark.parametrize(("make", "reason"), [
    (None, f"no such file; {_EXPECTED}"),
    (Path.mkdir, f"is a directory; {_EXPECTED}"),
    (_text_file, f"not a .npz archive (NumPy could not read it as a zip file); {_EXPECTED}"),
    (_object_array, "contains pickled (object) arrays (y_test), which are refused for safety; "
                    "expected plain uint8/integer arrays"),
    pytest.param(_unreadable, f"cannot be read (Permission denied); {_EXPECTED}",
                 marks=pytest.mark.skipif(_ROOT, reason="root reads a file of mode 000")),
], ids=["missing", "directory", "text-file", "object-array", "unreadable"])
def test_wrong_data_is_one_line_on_stderr_with_exit_code_2(tmp_path, command, make, reason):
    path = tmp_path / "mnist.npz"
    if make is not None:
        make(path)
    done = _lossverify(command, "--data", str(path), "--out", str(tmp_path / "out"))
    assert done.returncode == 2
    assert done.stderr == f"lossverify {command}: error: --data {path}: {reason}\n"
    assert done.stdout == ""
    assert not (tmp_path / "out").exists()


def test_wrong_data_is_reported_before_tensorflow_is_imported(tmp_path):
    """``-X importtime`` lists every module the command imported, on stderr."""
    missing = tmp_path / "nope.npz"
    done = _lossverify("train", "--data", str(missing), python_flags=("-X", "importtime"))
    assert done.returncode == 2
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()
                if line.startswith("import time:")}
    assert "numpy" in imported  # the listing works
    assert not {"tensorflow", "keras"} & imported
    assert f"lossverify train: error: --data {missing}: no such file" in done.stderr


# --- train: Ctrl-C, the same command again, fit's epoch headers, one-line warnings -------


_INTERRUPTED = re.compile(r"^lossverify train: interrupted after epoch (\d+) of 10000 of "
                          r"experiment exp4-fit-softmax \(saved in (.+)\); run the same "
                          r"command to resume$", re.M)


def _epoch_lines(stdout: str) -> list[int]:
    return [int(n) for n in re.findall(r"^Epoch (\d+), Loss: ", stdout, re.M)]


def _check_interrupted(code: int, stdout: str, stderr: str, run_dir: Path) -> int:
    """Ctrl-C: exit 130, no traceback, the epoch the checkpoint holds; returns that epoch."""
    assert code == 130, stderr[-3000:]
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    found = _INTERRUPTED.search(stderr)
    assert found, stderr
    assert found[2] == str(run_dir)
    saved = int(found[1])
    assert _checkpoint_epochs(run_dir) == saved  # the message is the truth on disk
    assert _epoch_lines(stdout)[-1] <= saved  # every epoch printed is a saved one
    return saved


def _check_headers(stdout: str, first: int) -> None:
    """Keras's header per epoch is ``Epoch k/10000``, k counting from ``first``."""
    headers = re.findall(r"Epoch (\d+)/(\d+)", stdout)
    assert headers, stdout[-3000:]
    assert {total for _, total in headers} == {"10000"}
    numbers = [int(k) for k, _ in headers]
    assert numbers == list(range(first, first + len(numbers)))


def _check_double_softmax_warning(stderr: str) -> None:
    """One line, without the file, line number and source line Python would show."""
    lines = stderr.splitlines()
    warned = [line for line in lines if "double softmax" in line]
    assert len(warned) == 1, lines
    assert warned[0].startswith("lossverify train: DoubleSoftmaxWarning: double softmax: "
                                "the loss 'focal' applies softmax")
    assert "--output logits" in warned[0]
    # Python's default display adds "file.py:LINE: DoubleSoftmaxWarning: ..." and the
    # line of source it is attributed to, "  history = train_run(data, config, ...".
    assert not any(re.search(r"\.py:\d+: ", line) for line in lines), lines
    assert not any("train_run(" in line for line in lines), lines


def test_fit_run_interrupted_then_resumed_by_the_same_command(tmp_path):
    """Experiment 4 (compile/fit) with the notes' softmax output and progress bars, as a
    user would run it: Ctrl-C once the first epoch is reported, then the same command
    again, and Ctrl-C once it has trained one more epoch. (One test, not several sharing
    a fixture: pytest-xdist would run such a fixture once per worker.)"""
    out = tmp_path / "out"
    run_dir = out / "exp4-fit-softmax"
    argv = ["train", "--experiment", "4", "--output", "softmax", "--epochs", "10000",
            "--batch-size", "16", "--data", str(_tiny_mnist(tmp_path, 48, 16)),
            "--out", str(out)]

    code, stdout, stderr = _interrupt(argv, "Epoch 1, Loss: ")
    saved = _check_interrupted(code, stdout, stderr, run_dir)
    assert saved >= 1
    _check_headers(stdout, first=1)
    _check_double_softmax_warning(stderr)

    code, stdout, stderr = _interrupt(argv, f"Epoch {saved + 1}, Loss: ")
    assert f"Resuming {run_dir} after epoch {saved} (of 10000)." in stdout
    printed = _epoch_lines(stdout)
    assert printed == list(range(1, len(printed) + 1))  # replayed 1..saved, then onwards
    assert _check_interrupted(code, stdout, stderr, run_dir) > saved
    _check_headers(stdout, first=saved + 1)
    _check_double_softmax_warning(stderr)


def test_ctrl_c_while_train_starts_up_is_clean_too(tmp_path):
    """Ctrl-C before any epoch (here: while TensorFlow loads) has nothing to resume."""
    argv = ["train", "--experiment", "3", "--data", str(_tiny_mnist(tmp_path)),
            "--out", str(tmp_path / "out")]
    code, _, stderr = _interrupt(argv, "Data: MNIST from ")
    assert code == 130
    assert "Traceback" not in stderr
    assert stderr.splitlines()[-1] == ("lossverify train: interrupted while starting up, "
                                       "before any training"), stderr
    assert not (tmp_path / "out" / "exp3-custom-loop-logits" / "checkpoint.npz").exists()


# --- bench: progress per configuration; Ctrl-C is clean --------------------------------


def test_bench_prints_progress_per_configuration_and_ctrl_c_exits_130(tmp_path):
    code, stdout, stderr = _interrupt(["bench", "--out", str(tmp_path)], "[2/",
                                      stream="stderr")
    assert code == 130
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    progress = re.findall(r"^\[(\d+)/(\d+) \d+s\] (\S+)", stderr, re.M)
    steps = [(int(i), name) for i, _, name in progress]
    assert steps[:3] == [(0, "float32"), (1, "step-eager-focal-b32-float32"),
                         (2, "step-function-focal-b32-float32")], stderr
    assert len({total for _, total, _ in progress}) == 1  # one total throughout
    assert stderr.splitlines()[-1].startswith("lossverify bench: interrupted; no report was saved")
    assert not (tmp_path / "bench.json").exists()
