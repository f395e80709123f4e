"""The layers: each file holds one layer's math, forward and backward (chapter 5 of the seed
note; chapter 6: batch norm, dropout, weight decay)."""

from .affine import affine
from .batch_norm import batch_norm
from .dropout import dropout
from .mse import mse
from .relu import relu
from .sigmoid import sigmoid
from .softmax_cross_entropy import softmax_cross_entropy
from .tanh import tanh
from .weight_decay import with_weight_decay

__all__ = ["affine", "batch_norm", "dropout", "mse", "relu", "sigmoid", "softmax_cross_entropy", "tanh", "with_weight_decay"]
