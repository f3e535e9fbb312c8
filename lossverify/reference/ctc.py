"""Reference for Keras 3's ``ctc`` loss (Connectionist Temporal Classification).

What Keras 3.15 computes (``keras/src/losses/losses.py``, ``ctc``, and
``keras/src/backend/tensorflow/nn.py``, ``ctc_loss``):

* ``y_true``: integer labels of shape ``(batch, max_label_length)``; ``0`` is the
  blank / mask index. Keras passes ``label_length = sum(y_true != 0)`` per sample and
  ``logit_length = time`` for every sample.
* ``y_pred``: **logits** of shape ``(batch, time, classes)``; TensorFlow applies
  ``log_softmax`` over the class axis itself (``tf.nn.ctc_loss``, dense labels,
  ``blank_index=0``, ``logits_time_major=False``).
* Any floating input is computed in float32 (Keras casts float64 logits down, because
  ``tf.nn.ctc_loss`` refuses float64, and casts the result back), so float64 inputs
  carry float32 rounding.

The loss per sample is ``-log p(l | z)`` with ``l`` the label sequence and
``p(l | z) = sum over alignments pi of prod_t softmax(z_t)[pi_t]``: an alignment is a
length-``time`` sequence over all classes that becomes ``l`` after merging repeated
classes and then removing blanks (so equal neighbouring labels need a blank between
them, and ``l`` fits only if ``time >= len(l) + #repeats``). The gradient with respect
to the logits is ``softmax(z_t)[k] - gamma_t(k)``, ``gamma_t(k)`` the posterior
probability that an alignment emits class ``k`` at time ``t`` (forward-backward).

Where this reference departs from what TensorFlow computes (known deviations, see the
module's tests and the phase-1 report):

* The label sequence is the *nonzero* entries of ``y_true`` in order, as Keras's
  ``label_length`` (a count of nonzero entries) and its docstring ("0 is the mask
  index") say. TensorFlow takes the first ``label_length`` entries instead, so a ``0``
  before the last label (``[[0, 2]]``, ``[[2, 0, 1]]``) is read as a label whose class is
  the blank and the last labels are dropped; its gradient then also disagrees with its
  own value.
* An impossible label (longer than ``time`` allows) has ``p = 0``: the loss is ``+inf``
  here (the gradient NaN). TensorFlow's dense CTC uses ``log(1e-307)`` as its
  "log 0" for the final states, so it returns about ``706.9`` plus the loss of the best
  non-final path, and every loss above about 700 is capped the same way (value and
  gradient wrong). Inputs must keep the loss well below 700 in float32.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lossverify.reference import _validate as V
from lossverify.reference._core import Evaluation, faithful, softmax_roundings

__all__ = ["CTC_BLANK", "check_ctc_labels", "check_ctc_logits", "ctc", "ctc_label_sequences"]

_ABS = np.abs

#: the blank / mask class (Keras's ``mask_index``)
CTC_BLANK = 0


def check_ctc_logits(y_pred: Any) -> np.ndarray:
    """``y_pred`` as logits of rank 3 ``(batch, time, classes)`` with at least one class,
    in the compute dtype."""
    yp, _ = V.as_real_array(y_pred, "y_pred")
    if yp.ndim != 3:
        raise ValueError(f"y_pred: expected logits of rank 3 (batch_size, time, num_classes), "
                         f"got shape {yp.shape}")
    V.check_class_axis_not_empty(yp, 2)
    return yp


def check_ctc_labels(y_true: Any, y_pred: np.ndarray) -> np.ndarray:
    """``y_true`` as int64 labels of shape ``(batch, max_label_length)`` in
    ``[0, classes)``, with y_pred's batch size."""
    arr = V.as_array(y_true, "y_true", "integer labels")
    if arr.ndim != 2:
        raise ValueError(f"y_true: expected integer labels of rank 2 (batch_size, "
                         f"max_label_length), got shape {arr.shape}")
    if arr.shape[0] != y_pred.shape[0]:
        raise ValueError(f"y_true: expected batch size {y_pred.shape[0]} (y_pred's first "
                         f"axis), got shape {arr.shape}")
    return V.as_labels(arr, y_pred.shape[2])


def ctc_label_sequences(y_true: Any) -> list[list[int]]:
    """The label sequence of each sample: its nonzero entries, in order."""
    arr = np.asarray(y_true)
    if arr.ndim != 2:
        raise ValueError(f"y_true: expected integer labels of rank 2 (batch_size, "
                         f"max_label_length), got shape {arr.shape}")
    return [[int(c) for c in row if c != CTC_BLANK] for row in arr]


def _lse(stack: np.ndarray, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(log sum exp(stack), weights)`` along ``axis``: ``-inf`` where every entry is
    ``-inf``; the weights ``exp(stack - result)`` (0 there) sum to 1."""
    m = np.max(stack, axis=axis, keepdims=True)
    finite = np.isfinite(m)
    m0 = np.where(finite, m, 0)
    e = np.exp(stack - m0)
    s = e.sum(axis=axis, keepdims=True)
    out = np.where(finite, m0 + np.log(np.where(finite, s, 1)), m)
    w = np.where(finite, e / np.where(finite, s, 1), 0)
    return np.squeeze(out, axis), w


def _shift(x: np.ndarray, k: int, fill: Any) -> np.ndarray:
    """``x[..., s - k]`` along the last axis (``k > 0``: from the left, ``k < 0``: from
    the right), ``fill`` where that falls outside."""
    out = np.full_like(x, fill)
    if k > 0:
        out[..., k:] = x[..., :-k]
    else:
        out[..., :k] = x[..., -k:]
    return out


def _extended(labels: np.ndarray):
    """Per sample the extended state sequence ``blank l1 blank l2 ... lL blank``
    (padded to the longest), its validity, the skip transitions ``s - 2 -> s`` (allowed
    into a label state whose class differs from the label two states back), the final
    states (the last label and the last blank) and the label lengths."""
    seqs = ctc_label_sequences(labels)
    lengths = np.array([len(q) for q in seqs], dtype=np.int64)
    n_states = 2 * (int(lengths.max()) if lengths.size else 0) + 1
    ext = np.full((len(seqs), n_states), CTC_BLANK, dtype=np.int64)
    for b, q in enumerate(seqs):
        ext[b, 1:2 * len(q):2] = q
    s = np.arange(n_states)
    valid = s[None, :] < (2 * lengths + 1)[:, None]
    skip = np.zeros_like(valid)
    skip[:, 2:] = (ext[:, 2:] != CTC_BLANK) & (ext[:, 2:] != ext[:, :-2])
    final = (s[None, :] == 2 * lengths[:, None]) | (s[None, :] == 2 * lengths[:, None] - 1)
    return ext, valid, skip & valid, final & valid, lengths


def _log_softmax_terms(z: np.ndarray):
    """``log_softmax(z)`` over the classes, the softmax, and the error scale of each
    ``log_softmax`` element (float64). ``(z - m) - log(s)`` with ``m`` the row maximum
    and ``s = sum_j exp(z_j - m)`` rounds the shift (``|z - m|``), the result
    (``|lsm|``), and ``log(s)``, whose error is that of ``s`` relative: the terms'
    arguments round by ``u |z_j - m|`` (``sum_j p_j |z_j - m|``), the sum of ``n`` terms
    (the budget's ``n + 1``), and the log itself (``log s <= log n``); the form
    ``z - (m + log s)`` rounds ``m + log s`` instead (``|m|``). Plus 1."""
    m = z.max(axis=-1, keepdims=True)
    shifted = z - m
    e = np.exp(shifted)
    s = e.sum(axis=-1, keepdims=True)
    lsm = shifted - np.log(s)
    p = e / s
    f64 = np.float64
    sh, lf, pf, mf = (np.asarray(x, f64) for x in (shifted, lsm, p, m))
    size = (_ABS(sh) + _ABS(lf) + _ABS(mf) + (pf * _ABS(sh)).sum(-1, keepdims=True)
            + float(np.log(z.shape[-1])) + 1.0)
    return lsm, p, size


def _einsum(subscripts: str, a: np.ndarray, b: np.ndarray, dt: np.dtype) -> np.ndarray:
    """``np.einsum`` with the result in ``dt``; NumPy's einsum has no bfloat16 loops, so a
    bfloat16 evaluation (a tolerance yardstick) sums in float32 and rounds once."""
    work = dt if np.dtype(dt).type in (np.float16, np.float32, np.float64) else np.float32
    return np.einsum(subscripts, a.astype(work), b.astype(work)).astype(dt)


@V.quiet
def _eval_ctc(y_true: Any, y_pred: Any) -> Evaluation:
    yp = check_ctc_logits(y_pred)
    labels = check_ctc_labels(y_true, yp)
    dt = yp.dtype
    n_batch, n_time, n_classes = yp.shape
    ext, valid, skip, final, lengths = _extended(labels)
    n_states = ext.shape[1]
    neg_inf = dt.type(-np.inf)

    lsm, p, lsm_size = _log_softmax_terms(yp)
    # emission log probabilities of the states, (batch, time, states); -inf off the label
    emit = np.take_along_axis(lsm, np.broadcast_to(ext[:, None, :], (n_batch, n_time,
                                                                        n_states)), axis=2)
    emit = np.where(valid[:, None, :], emit, neg_inf)
    emit_size = np.take_along_axis(lsm_size, np.broadcast_to(
        ext[:, None, :], (n_batch, n_time, n_states)), axis=2)

    # forward: alpha[t, s] = log P(prefix of the alignment up to t ends in state s), with
    # the emission at t; backward: beta[t, s] = log P(suffix from t | state s at t), with
    # the emission at t. Both computed in the compute dtype.
    alpha = np.full((n_batch, n_time, n_states), neg_inf, dtype=dt)
    beta = np.full((n_batch, n_time, n_states), neg_inf, dtype=dt)
    # the recursions' logsumexp weights, (time, 3 predecessors, batch, states)
    w_alpha = np.zeros((n_time, 3, n_batch, n_states))
    w_beta = np.zeros((n_time, 3, n_batch, n_states))
    if n_time:
        start = np.zeros((n_batch, n_states), bool)
        start[:, 0] = True
        if n_states > 1:
            start[:, 1] = lengths >= 1
        alpha[:, 0] = np.where(start, emit[:, 0], neg_inf)
        for t in range(1, n_time):
            prev = alpha[:, t - 1]
            cand = np.stack([prev, _shift(prev, 1, neg_inf),
                             np.where(skip, _shift(prev, 2, neg_inf), neg_inf)])
            acc, w = _lse(cand)
            alpha[:, t] = acc + emit[:, t]
            w_alpha[t] = w
        beta[:, -1] = np.where(final, emit[:, -1], neg_inf)
        skip_from = _shift(skip, -2, False)  # s -> s + 2 allowed
        for t in range(n_time - 2, -1, -1):
            nxt = beta[:, t + 1]
            cand = np.stack([nxt, _shift(nxt, -1, neg_inf),
                             np.where(skip_from, _shift(nxt, -2, neg_inf), neg_inf)])
            acc, w = _lse(cand)
            beta[:, t] = acc + emit[:, t]
            w_beta[t] = w
        log_p, w_end = _lse(np.where(final, alpha[:, -1], neg_inf), axis=-1)
        _, w_start = _lse(np.where(start, beta[:, 0], neg_inf), axis=-1)
    else:  # no frames: only the empty label has an (empty) alignment
        log_p = np.where(lengths == 0, dt.type(0), neg_inf).astype(dt)

    value = -log_p
    possible = np.isfinite(value)

    # posteriors gamma[t, s] = P(state s at t | l, z) and per class
    grad = np.zeros(yp.shape, dtype=dt)
    occ = np.zeros(yp.shape, dtype=dt)
    if n_time:
        log_gamma = alpha + beta - emit - log_p[:, None, None]
        gamma = np.where(np.isfinite(log_gamma), np.exp(log_gamma), dt.type(0))
        onehot = ext[:, :, None] == np.arange(n_classes)[None, None, :]  # (b, s, k)
        occ = _einsum("bts,bsk->btk", gamma, onehot, dt)
        p_hat, _ = faithful(p, softmax_roundings(yp))
        grad = (p_hat - occ).astype(dt)

    value_scale, grad_scale = _scales(yp, p, alpha, beta, emit, emit_size, w_alpha, w_beta,
                                      w_end if n_time else None,
                                      w_start if n_time else None, log_p, ext)
    nan = np.asarray(np.nan, dtype=dt)
    grad = np.where(possible[:, None, None], grad, nan)
    value_scale = np.where(possible, value_scale, 1.0)
    grad_scale = np.where(possible[:, None, None], grad_scale, 0.0)
    # CTC is smooth: no kinks. ``kink`` has y_pred's shape without the class axis, (batch,
    # time), the shape lossverify.tolerance expands along the class axis.
    return Evaluation(value, grad, value_scale, grad_scale, np.zeros((n_batch, n_time), bool))


def _scales(yp, p, alpha, beta, emit, emit_size, w_alpha, w_beta, w_end, w_start, log_p,
            ext):
    """Error scales by a running (first-order) error analysis of forward-backward.

    The budget (:mod:`lossverify.tolerance`) allows ``K u (n + 1) scale`` with ``n`` the
    number of classes: ``n + 1`` for a sum over the class axis, ``K`` for the few
    roundings inside one term. Two kinds of rounding reach the loss here:

    * ``log_softmax``'s, per element ``emit_size`` (see :func:`_log_softmax_terms`):
      a sum over the classes, counted like the other references' terms;
    * the recursions', counted one rounding at a time, so they enter divided by
      ``n + 1`` (no class-axis sum is involved; ``K`` still covers each ``logsumexp``'s
      internal roundings). Forming ``alpha[t, s] = logsumexp(preds) + emit`` rounds at
      the size of the result, ``|alpha|``; a per-step normalised implementation (as
      TensorFlow's) instead holds ``alpha - A_t`` with ``A_t = logsumexp_s alpha[t, s]``
      and accumulates the normalisers ``A_t``: ``|alpha| + 2 |A_t|`` covers both; 3 for
      the ``logsumexp`` of at most 3 terms. Likewise ``beta`` with ``B_t``.

    An error in ``alpha[t-1, s']`` reaches ``alpha[t, s]`` with the weight of ``s'`` in
    the ``logsumexp`` (the weights sum to 1), so ``E[t, s] = sum_pred w E[t-1, pred] +
    local[t, s]``; carried to the final states (forward) or the first (backward) this is
    the posterior-weighted sum of all local errors. The value's scale is the larger of
    the two directions. The occupancy ``gamma_t(s) = exp(alpha + beta - emit - log p)``
    has the relative error scale ``E_alpha + E_beta + emit_size + (log p's scale)`` plus
    the rounding of the exponent's sum; a gradient element's scale is the softmax ``p``
    (whose own rounding the budget takes from :func:`~lossverify.reference._core.faithful`)
    plus ``sum_s gamma (1 + that)``, plus ``p`` times that sum over every class of the
    frame: a gradient taken in reverse mode through ``log_softmax`` (``g_k - p_k sum_j
    g_j``, as JAX's and PyTorch's are) carries the errors of all the frame's occupancies
    into each class, weighted by ``p_k`` (a class outside the label with ``p`` near 1 has
    no occupancy of its own, but the frame's total occupancy, 1 up to those errors).
    """
    n_batch, n_time, n_classes = yp.shape
    n_states = ext.shape[1]
    if n_time == 0:
        return np.zeros(n_batch), np.zeros(yp.shape)
    n1 = float(n_classes + 1)
    f64 = np.float64
    a, b, em = (np.asarray(x, f64) for x in (alpha, beta, emit))
    fa, fb = np.isfinite(a), np.isfinite(b)
    a0, b0 = np.where(fa, a, 0.0), np.where(fb, b, 0.0)
    em0 = np.where(np.isfinite(em), em, 0.0)
    big_a = np.abs(np.nan_to_num(_lse(np.moveaxis(a, 2, 0))[0], neginf=0.0))[:, :, None]
    big_b = np.abs(np.nan_to_num(_lse(np.moveaxis(b, 2, 0))[0], neginf=0.0))[:, :, None]
    local_a = np.where(fa, emit_size + (_ABS(a0) + 2.0 * big_a + 3.0) / n1, 0.0)
    local_b = np.where(fb, emit_size + (_ABS(b0) + 2.0 * big_b + 3.0) / n1, 0.0)
    e_a = np.zeros((n_batch, n_time, n_states))
    e_b = np.zeros((n_batch, n_time, n_states))
    e_a[:, 0] = local_a[:, 0]
    for t in range(1, n_time):
        prev, w = e_a[:, t - 1], w_alpha[t]
        e_a[:, t] = (w[0] * prev + w[1] * _shift(prev, 1, 0.0) + w[2] * _shift(prev, 2, 0.0)
                     + local_a[:, t])
    e_b[:, -1] = local_b[:, -1]
    for t in range(n_time - 2, -1, -1):
        nxt, w = e_b[:, t + 1], w_beta[t]
        e_b[:, t] = (w[0] * nxt + w[1] * _shift(nxt, -1, 0.0) + w[2] * _shift(nxt, -2, 0.0)
                     + local_b[:, t])
    lp = np.asarray(log_p, f64)
    ok = np.isfinite(lp)
    lp0 = np.where(ok, _ABS(lp), 0.0)
    e_end = (np.asarray(w_end, f64) * e_a[:, -1]).sum(-1)
    e_start = (np.asarray(w_start, f64) * e_b[:, 0]).sum(-1)
    value_scale = np.maximum(e_end, e_start) + (lp0 + 3.0) / n1

    reach = fa & fb & ok[:, None, None]
    log_gamma = np.where(reach, a0 + b0 - em0 - lp[:, None, None], 0.0)
    gamma = np.where(reach, np.exp(log_gamma), 0.0)
    rel = (e_a + e_b + emit_size + value_scale[:, None, None]
           + (_ABS(a0) + _ABS(b0) + _ABS(em0) + lp0[:, None, None] + big_a + big_b + 3.0) / n1)
    onehot = (ext[:, :, None] == np.arange(n_classes)[None, None, :]).astype(f64)
    occ_size = np.einsum("bts,bsk->btk", np.where(reach, gamma * (1.0 + rel), 0.0), onehot)
    # d/dz through log_softmax's backward (reverse mode: JAX, PyTorch) is
    # g_k - p_k sum_j g_j with g = -occupancy: the errors of every class's occupancy
    # reach class k weighted by p_k, whatever the class's own occupancy
    p64 = np.asarray(p, f64)
    grad_scale = p64 + occ_size + p64 * occ_size.sum(axis=-1, keepdims=True)
    return value_scale, grad_scale


def ctc(y_true: Any, y_pred: Any) -> np.ndarray:
    """CTC loss per sample: ``-log p(l | z)``, Keras 3's ``keras.losses.ctc``.

    ``y_true``: integer labels ``(batch, max_label_length)``, 0 the blank / mask; the
    label sequence ``l`` is the nonzero entries in order (trailing zeros are padding).
    ``y_pred``: logits ``(batch, time, classes)``, class 0 the blank; the softmax is
    taken over the last axis. ``p(l | z)`` sums ``prod_t softmax(z_t)[pi_t]`` over every
    alignment ``pi`` (length ``time``) that collapses to ``l`` (merge repeats, drop
    blanks). A label that no alignment fits gives ``+inf``.

    Two frames of uniform logits over {blank, 1} and the label ``[1]``: the alignments
    ``1 1``, ``0 1`` and ``1 0`` each have probability 1/4, so the loss is
    ``-log(3/4)`` (Keras: 0.2876821).

    >>> ctc([[1, 0]], [[[0., 0.], [0., 0.]]]).round(6)
    array([0.287682])
    """
    return np.asarray(_eval_ctc(y_true, y_pred).value)
