"""The layers: each file holds one layer's math, forward and backward (chapter 5 of the seed
note; chapter 6: batch norm, dropout, weight decay)."""

from .affine import affine
from .batch_norm import batch_norm
from .conv2d import conv2d
from .dropout import dropout
from .flatten import flatten
from .mse import mse
from .pooling import avg_pool2d, max_pool2d
from .relu import relu
from .sigmoid import sigmoid
from .softmax_cross_entropy import softmax_cross_entropy
from .tanh import tanh
from .weight_decay import with_weight_decay

__all__ = ["affine", "avg_pool2d", "batch_norm", "conv2d", "dropout", "flatten", "max_pool2d", "mse", "relu", "sigmoid", "softmax_cross_entropy", "tanh", "with_weight_decay"]
