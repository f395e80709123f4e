"""Networks built from the layers: the book's ``MultiLayerNet`` and ``MultiLayerNetExtend``
(chapter 6) as one ``serial`` stack."""

from __future__ import annotations

from .core import Layer, StatefulLayer, serial
from .initializers import INITIALIZERS, weight_init
from .layers import affine, batch_norm, dropout, relu, sigmoid, tanh

ACTIVATIONS = {"relu": relu, "sigmoid": sigmoid, "tanh": tanh}
# He initialisation for ReLU, Xavier (Glorot) for the saturating activations (book, ch. 6).
DEFAULT_INIT = {"relu": "he", "sigmoid": "xavier", "tanh": "xavier"}


def mlp(hidden: tuple[int, ...] | list[int], out_dim: int, activation: str = "relu", init: str | None = None,
        batchnorm: bool = False, drop_rate: float = 0.0) -> Layer | StatefulLayer:
    """``affine -> [batch_norm] -> activation -> [dropout]`` for each hidden width, then a last
    ``affine`` to ``out_dim`` scores: the book's ``MultiLayerNetExtend``.

    ``mlp((50,), 10)`` is the book's TwoLayerNet; the loss is kept apart (see ``Loss``) and
    weight decay is a setting of the loss (``loss_and_grads(..., weight_decay=)``, the trainers).
    ``init`` is ``"he"``, ``"xavier"`` or ``"book"`` (std 0.01); by default He for ReLU and
    Xavier for sigmoid and tanh. With ``batchnorm`` the affine layers before it have no bias
    (the book keeps one; batch norm subtracts the mean, so its gradient is identically zero
    and ``beta`` already shifts). With ``batchnorm`` or ``drop_rate > 0`` the network is a
    ``StatefulLayer`` (running averages, dropout keys); without, a plain ``Layer``.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"mlp: activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    init = init or DEFAULT_INIT[activation]
    if init not in INITIALIZERS:
        raise ValueError(f"mlp: init must be one of {list(INITIALIZERS)}, got {init!r}")
    if not isinstance(out_dim, int) or isinstance(out_dim, bool) or out_dim < 1:
        raise ValueError(f"mlp: out_dim must be a positive int, got {out_dim!r}")
    widths = list(hidden)
    if any(not isinstance(w, int) or isinstance(w, bool) or w < 1 for w in widths):
        raise ValueError(f"mlp: hidden widths must be positive ints, got {widths}")
    w_init = weight_init(init)
    layers = []
    for width in widths:
        layers.append(affine(width, w_init=w_init, bias=not batchnorm))  # batch norm's beta is the bias
        if batchnorm:
            layers.append(batch_norm())
        layers.append(ACTIVATIONS[activation])
        if drop_rate:
            layers.append(dropout(drop_rate))
    layers.append(affine(out_dim, w_init=w_init))
    return serial(*layers)
