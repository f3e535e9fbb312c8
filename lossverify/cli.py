"""``lossverify`` command line: ``verify | train | digits | bench``.

Each subcommand lives in the module that does the work and registers itself through a
``register(subparsers)`` function; TensorFlow is imported only when a command runs, so
``lossverify --help`` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys

#: subcommand modules, each exposing ``register(subparsers)``.
_COMMAND_MODULES = (
    "lossverify.verify_cli",
    "lossverify.mnist.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lossverify",
        description="Verify loss functions against NumPy references; reproduce and "
        "benchmark the study notes' MNIST experiments.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
