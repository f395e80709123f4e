"""Networks built from the layers: the book's ``MultiLayerNet`` and ``MultiLayerNetExtend``
(chapter 6), ``SimpleConvNet`` (chapter 7) and a ``DeepConvNet`` (chapter 8), each one ``serial`` stack.

Each is initialized like any layer, ``net.init(key, in_shape, dtype=jnp.float32)``: ``jnp.float64``
(under ``jax_enable_x64``) gives float64 parameters and state, for the gradient checker or a
comparison with ``jax.grad``."""

from __future__ import annotations

from .core import Layer, StatefulLayer, serial
from .initializers import INITIALIZERS, weight_init
from .layers import affine, batch_norm, conv2d, dropout, flatten, max_pool2d, relu, sigmoid, tanh

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


def simple_conv_net(out_dim: int = 10, filters: int = 30, kernel_size: int = 5, hidden: int = 100,
                    init: str = "he", padding: int = 0) -> Layer:
    """The book's ``SimpleConvNet`` (chapter 7): ``conv(filters, kernel, stride 1, padding) -> ReLU
    -> max pool 2x2 stride 2 -> flatten -> affine(hidden) -> ReLU -> affine(out_dim)``, sized from
    the input shape by ``init(key, (N, C, H, W))``. The book pads 0 (its ``conv_param``'s
    ``pad``) on 28x28 MNIST; on 8x8 digits that leaves a 4x4 map in which a corner pixel reaches
    one output where a centre pixel reaches 16, and ``padding=2`` (the 5x5 kernel's "same") keeps
    8x8. The book draws every weight with std 0.01; the default here is He (``init="book"`` for
    the book's).
    """
    conv_init = weight_init(init, in_axis=1, out_axis=0)
    dense_init = weight_init(init)
    return serial(conv2d(filters, kernel_size, padding=padding, w_init=conv_init), relu, max_pool2d(2, 2), flatten,
                  affine(hidden, w_init=dense_init), relu, affine(out_dim, w_init=dense_init))


def deep_conv_net(out_dim: int = 10, blocks=((16, 16), (32, 32), (64, 64)), paddings=None, hidden: int = 50,
                  drop_rate: float = 0.5) -> StatefulLayer:
    """A deep CNN in the spirit of the book's ``DeepConvNet`` (chapter 8): for each block of
    widths, ``conv 3x3 -> ReLU`` per width and a 2x2 max pool after the block; then
    ``affine(hidden) -> ReLU -> dropout -> affine(out_dim) -> dropout`` (the book drops on the
    scores too), He init throughout. ``paddings`` gives each convolution's padding (default 1
    everywhere, which fits 8x8 digits: 8 -> 4 -> 2 -> 1); the book's MNIST network is
    ``paddings=(1, 1, 1, 2, 1, 1)`` (28 -> 14 -> 16 -> 8 -> 4).
    """
    widths = [w for block in blocks for w in block]
    if not widths or any(not isinstance(w, int) or isinstance(w, bool) or w < 1 for w in widths):
        raise ValueError(f"deep_conv_net: blocks must hold positive int widths, got {blocks!r}")
    paddings = tuple(paddings) if paddings is not None else (1,) * len(widths)
    if len(paddings) != len(widths):
        raise ValueError(f"deep_conv_net: paddings has {len(paddings)} entries for {len(widths)} convolutions")
    conv_init = weight_init("he", in_axis=1, out_axis=0)
    layers, i = [], 0
    for block in blocks:
        for width in block:
            layers += [conv2d(width, 3, padding=paddings[i], w_init=conv_init), relu]
            i += 1
        layers.append(max_pool2d(2, 2))
    dense_init = weight_init("he")
    layers += [flatten, affine(hidden, w_init=dense_init), relu, dropout(drop_rate),
               affine(out_dim, w_init=dense_init), dropout(drop_rate)]
    return serial(*layers)
