"""Robust files: an interrupted write never leaves a half-written file that a later run
trusts. The kill tests stop a real subprocess with SIGKILL in the middle of a write (no
``finally`` runs, no buffers are flushed), then read what is on disk."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from lossverify._io import atomic_path, atomic_write, write_json, write_text

OLD = {"report": "old", "values": list(range(100))}

# The child writes the first half of a new JSON document, tells the parent, and sleeps
# until it is killed. WRITER selects lossverify's atomic writer or a plain open().
CHILD = textwrap.dedent("""
    import json, sys, time
    from lossverify._io import atomic_write
    path, writer = sys.argv[1], sys.argv[2]
    text = json.dumps({"report": "new", "values": list(range(20000))})
    cm = open(path, "w") if writer == "plain" else atomic_write(path)
    fh = cm.__enter__()
    fh.write(text[: len(text) // 2])
    fh.flush()
    print("half-written", flush=True)
    time.sleep(60)
""")


def _kill_mid_write(path, writer):
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(path), writer],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "half-written"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def test_killed_atomic_write_keeps_the_previous_file(tmp_path):
    path = tmp_path / "report.json"
    write_json(path, OLD)
    _kill_mid_write(path, "atomic")
    assert json.loads(path.read_text()) == OLD
    # what the kill leaves is a hidden temporary sibling, never the target's name
    leftovers = sorted(p.name for p in tmp_path.iterdir() if p.name != "report.json")
    assert all(n.startswith(".report.json.") and n.endswith(".tmp") for n in leftovers)


def test_killed_atomic_write_leaves_no_target_when_there_was_none(tmp_path):
    path = tmp_path / "report.json"
    _kill_mid_write(path, "atomic")
    assert not path.exists()


def test_the_kill_test_has_teeth_a_plain_write_is_left_corrupt(tmp_path):
    path = tmp_path / "report.json"
    write_json(path, OLD)
    _kill_mid_write(path, "plain")
    with pytest.raises(json.JSONDecodeError):
        json.loads(path.read_text())


def test_exception_inside_the_block_keeps_the_old_file_and_no_temp(tmp_path):
    path = tmp_path / "a.txt"
    write_text(path, "old\n")
    with pytest.raises(RuntimeError), atomic_write(path) as fh:
        fh.write("partial")
        raise RuntimeError("interrupted")
    assert path.read_text() == "old\n"
    assert sorted(os.listdir(tmp_path)) == ["a.txt"]


def test_atomic_path_keeps_the_suffix_and_moves_into_place(tmp_path):
    path = tmp_path / "sub" / "plot.png"
    with atomic_path(path) as tmp:
        assert tmp.suffix == ".png" and tmp.parent == path.parent
        tmp.write_bytes(b"png")
    assert path.read_bytes() == b"png"
    with pytest.raises(OSError), atomic_path(path) as tmp:
        tmp.write_bytes(b"half")
        raise OSError("disk full")
    assert path.read_bytes() == b"png"
    assert sorted(os.listdir(path.parent)) == ["plot.png"]


def test_bad_mode_names_the_argument(tmp_path):
    with pytest.raises(ValueError, match="mode"), atomic_write(tmp_path / "x", "a"):
        pass


def test_write_json_is_byte_stable(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    write_json(a, {"b": 1, "a": [1.5, float("inf")]})
    write_json(b, {"a": [1.5, float("inf")], "b": 1})
    assert a.read_bytes() == b.read_bytes()


def test_written_files_get_the_mode_open_would_give(tmp_path):
    """mkstemp creates 0o600 files; a report must be as readable as one open() wrote."""
    umask = os.umask(0o022)
    try:
        write_text(tmp_path / "new.txt", "x")
        assert (tmp_path / "new.txt").stat().st_mode & 0o777 == 0o644
        (tmp_path / "kept.txt").write_text("old")
        os.chmod(tmp_path / "kept.txt", 0o640)
        write_text(tmp_path / "kept.txt", "new")
        assert (tmp_path / "kept.txt").stat().st_mode & 0o777 == 0o640
        with atomic_path(tmp_path / "plot.png") as tmp:
            tmp.write_bytes(b"png")
        assert (tmp_path / "plot.png").stat().st_mode & 0o777 == 0o644
    finally:
        os.umask(umask)
