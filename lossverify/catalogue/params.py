"""Parameters shared by several records: one :class:`~lossverify.record.Param` each, with
its validator and thorough values (NumPy only)."""

from __future__ import annotations

from typing import Any

from lossverify.record import Param
from lossverify.reference import _validate as V

BOOL = (False, True)
GAMMAS = (0.0, 0.5, 1.0, 2.0, 3.5)


def _flag(name: str) -> Any:
    return lambda v: V.check_flag(v, name)


def _check_class_num(value: Any) -> None:
    if value is not None and V.check_int(value, "class_num") < 1:
        raise ValueError(f"class_num: expected a positive int, got {value!r}")


def from_logits(thorough: tuple[Any, ...] = BOOL) -> Param:
    return Param("from_logits", False, _flag("from_logits"), thorough)


def label_smoothing(thorough: tuple[Any, ...] = (0.0, 0.1, 1.0)) -> Param:
    return Param("label_smoothing", 0.0, V.check_label_smoothing, thorough)


def axis(thorough: tuple[Any, ...] = ()) -> Param:
    return Param("axis", -1, lambda v: V.check_int(v, "axis"), thorough)


def gamma(thorough: tuple[Any, ...] = GAMMAS) -> Param:
    return Param("gamma", 2.0, V.check_gamma, thorough)


def alpha(thorough: tuple[Any, ...] = (0.25, 1.0)) -> Param:
    return Param("alpha", 0.25, V.check_alpha, thorough)


def apply_class_balancing() -> Param:
    return Param("apply_class_balancing", False, _flag("apply_class_balancing"), BOOL)


def ignore_class() -> Param:
    return Param("ignore_class", None, V.check_ignore_class, (None, 0))


def class_num() -> Param:
    return Param("class_num", 10, _check_class_num, (3, 10))
