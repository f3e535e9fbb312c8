"""``lossverify`` command line: ``verify | train | digits | bench``.

Each subcommand lives in the module that does the work and registers itself through a
``register(subparsers)`` function; TensorFlow is imported only when a command runs, so
``lossverify --help`` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import NoReturn

#: subcommand modules, each exposing ``register(subparsers)``.
_COMMAND_MODULES = (
    "lossverify.verify_cli",
    "lossverify.mnist.cli",
)


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr (exit code 2), naming the
    command and pointing at its ``--help``, rather than the usage block and the error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="lossverify",
        description="Verify loss functions against NumPy references; reproduce and "
        "benchmark the study notes' MNIST experiments.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from lossverify.verify_cli import UsageError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UsageError as exc:
        print(f"lossverify {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lossverify {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
