"""Adapters of other frameworks' losses to a reference's call convention: each takes the
framework's own loss and returns ``loss(y_true, y_pred)`` as the reference takes it,
doing only what the two conventions need (the computation stays the framework's). A
:class:`~lossverify.record.Counterpart` names one in ``adapter``. Nothing here imports a
framework until an adapted loss is called.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def _ctc_doc(framework: str, call: str) -> str:
    return (f"{framework}'s CTC from Keras's convention: ``y_true`` (batch, width) labels "
            "whose zeros are the mask wherever they stand (the label sequence is the "
            "nonzero entries in order), ``y_pred`` (batch, time, classes) logits, every "
            f"frame used, blank 0; returns the per-sample loss. Calls {call}.")


def torch_ctc(ctc_loss: Callable[..., Any]) -> Callable[[Any, Any], Any]:
    """``torch.nn.functional.ctc_loss`` with Keras's convention: the nonzero labels moved
    to the front in order (a stable sort on ``label == 0``) with their count as target
    lengths, ``log_softmax`` of the logits on a (time, batch, classes) layout, every
    frame as input length, ``blank=0``, ``reduction='none'``."""
    import torch

    def loss(y_true: Any, y_pred: Any) -> Any:
        labels = torch.as_tensor(y_true).long()
        mask = (labels == 0).int()
        order = torch.argsort(mask, dim=1, stable=True)
        targets = torch.gather(labels, 1, order)
        target_lengths = (labels != 0).sum(dim=1)
        batch, time = y_pred.shape[0], y_pred.shape[1]
        log_probs = torch.nn.functional.log_softmax(y_pred, dim=-1).transpose(0, 1)
        input_lengths = torch.full((batch,), time, dtype=torch.long)
        return ctc_loss(log_probs, targets, input_lengths, target_lengths, blank=0,
                        reduction="none")

    loss.__doc__ = _ctc_doc("PyTorch", "torch.nn.functional.ctc_loss")
    return loss


def optax_ctc(ctc_loss: Callable[..., Any]) -> Callable[[Any, Any], Any]:
    """``optax.ctc_loss`` with Keras's convention: the nonzero labels moved to the front
    in order, ``label_paddings`` 1 beyond their count, no logit paddings (every frame),
    ``blank_id=0`` (optax applies ``log_softmax`` itself)."""
    import jax.numpy as jnp

    def loss(y_true: Any, y_pred: Any) -> Any:
        labels = jnp.asarray(y_true).astype(jnp.int32)
        order = jnp.argsort((labels == 0).astype(jnp.int32), axis=1, stable=True)
        compact = jnp.take_along_axis(labels, order, axis=1)
        lengths = jnp.sum(labels != 0, axis=1, keepdims=True)
        label_paddings = (jnp.arange(labels.shape[1])[None, :] >= lengths).astype(
            y_pred.dtype)
        logit_paddings = jnp.zeros(y_pred.shape[:2], y_pred.dtype)
        return ctc_loss(y_pred, logit_paddings, compact, label_paddings, blank_id=0)

    loss.__doc__ = _ctc_doc("optax", "optax.ctc_loss")
    return loss
