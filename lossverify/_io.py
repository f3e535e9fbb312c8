"""Atomic file output: a reader never sees a half-written file.

Every file lossverify writes (reports, histories, checkpoints, plots) goes through
:func:`atomic_write`: the bytes are written to a temporary file in the destination's
folder, flushed and fsynced, then moved over the destination with ``os.replace``,
which is atomic on POSIX and Windows. An interrupted run leaves either the old file or
the new one, never a truncated one; the temporary file is removed on error.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_path", "atomic_write", "write_json", "write_text"]


def _publish(tmp: str, target: Path) -> None:
    """Give ``tmp`` the mode a plain ``open()`` would have given ``target`` (the existing
    file's mode, else 0o666 minus the umask; ``mkstemp`` makes it 0o600), then move it
    over ``target`` atomically."""
    try:
        mode = target.stat().st_mode & 0o7777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    os.chmod(tmp, mode)
    os.replace(tmp, target)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temporary sibling of ``path`` for writing; move it into place on success."""
    if mode not in ("w", "wb"):
        raise ValueError(f"mode: expected 'w' or 'wb', got {mode!r}")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, mode, encoding="utf-8" if mode == "w" else None) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        _publish(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path for a library that writes files itself (matplotlib, Keras).

    The temporary file keeps ``path``'s suffix, so writers that pick a format from the
    extension still work; it is moved over ``path`` only if the block succeeds.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=target.suffix, dir=target.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        _publish(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_write(path, "w") as fh:
        fh.write(text)


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented, key-sorted JSON (byte-stable for equal input), atomically."""
    from lossverify.report import to_strict_json

    write_text(path, to_strict_json(obj))
