"""The layers of the seed note: each file holds one layer's math, forward and backward."""

from .affine import affine
from .mse import mse
from .relu import relu
from .sigmoid import sigmoid
from .softmax_cross_entropy import softmax_cross_entropy
from .tanh import tanh

__all__ = ["affine", "mse", "relu", "sigmoid", "softmax_cross_entropy", "tanh"]
