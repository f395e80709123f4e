"""Independent reference forwards for chapter 6: batch normalization, dropout, weight decay
and the book's ``MultiLayerNetExtend``. Nothing here imports ``pure_backprop``.

Batch norm is written from the paper's definition (mean and biased variance over the batch
and, for images, the spatial axes; ``jnp.var``), not from the package's staged graph.
Dropout's mask is a constant of the function; the reference draws it by the documented rule
(``bernoulli(key, 1 - drop_rate, x.shape)``, and ``serial`` gives layer ``i`` the key
``jax.random.split(key, n_layers)[i]``) so that both compute the same function.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from . import softmax_cross_entropy

EPS = 1e-5


def _feature_shape(x):
    return (1, x.shape[1]) if x.ndim == 2 else (1, x.shape[1], 1, 1)


def batch_norm_train(params, x):
    axes = (0,) if x.ndim == 2 else (0, 2, 3)
    shape = _feature_shape(x)
    normalized = (x - jnp.mean(x, axis=axes, keepdims=True)) / jnp.sqrt(jnp.var(x, axis=axes, keepdims=True) + EPS)
    return params["gamma"].reshape(shape) * normalized + params["beta"].reshape(shape)


def batch_norm_eval(state):
    def forward(params, x):
        shape = _feature_shape(x)
        normalized = (x - state["mean"].reshape(shape)) * jax.lax.rsqrt(state["var"].reshape(shape) + EPS)
        return params["gamma"].reshape(shape) * normalized + params["beta"].reshape(shape)

    return forward


def dropout(drop_rate, key):
    def forward(params, x):
        keep = 1.0 - drop_rate
        return jnp.where(jax.random.bernoulli(key, keep, x.shape), x / keep, 0.0)

    return forward


def weight_decay_penalty(params, weight_decay):
    """0.5 * lambda * the squared Frobenius norm of every leaf named ``W``."""
    total = 0.0
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        if getattr(path[-1], "key", None) == "W":
            total = total + 0.5 * weight_decay * jnp.linalg.norm(leaf.ravel()) ** 2
    return total


def _linear(params, x):
    """``x W (+ b)``: the affine layers before batch norm have no bias."""
    y = jnp.einsum("nd,dm->nm", x.reshape(x.shape[0], -1), params["W"])
    return y + params["b"][None, :] if "b" in params else y


def mlp_extend(params, x, targets, activation, batchnorm, drop_rate, key, weight_decay):
    """``affine -> [batch_norm] -> activation -> [dropout]`` per hidden layer, a last affine,
    softmax cross-entropy, plus the weight-decay penalty; train mode. ``params`` is the
    package's tuple, one entry per layer (``()`` for parameter-free layers)."""
    keys = jax.random.split(key, len(params))
    h, i = x, 0
    hidden = sum(1 for p in params if isinstance(p, dict) and "W" in p) - 1
    for _ in range(hidden):
        h = _linear(params[i], h)
        i += 1
        if batchnorm:
            h = batch_norm_train(params[i], h)
            i += 1
        h = activation(None, h)
        i += 1
        if drop_rate:
            h = dropout(drop_rate, keys[i])(None, h)
            i += 1
    scores = _linear(params[i], h)
    return softmax_cross_entropy(scores, targets) + weight_decay_penalty(params, weight_decay)
