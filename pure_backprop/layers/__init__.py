"""The layers: each file holds one layer's math, forward and backward (chapter 5 of the seed
note; chapter 6: batch norm, dropout, weight decay; chapter 7: convolution and pooling; the
sequel: embedding, time-distributed affine and loss, recurrent layers, attention; the
transformer: layer norm, GELU, masked softmax, causal multi-head self-attention)."""

from .affine import affine
from .attention import attention, attention_weight, mask_from_lengths, time_attention, time_attention_weights, weight_sum
from .batch_norm import batch_norm
from .bptt import truncated_bptt
from .conv2d import conv2d
from .dropout import dropout
from .embedding import embedding
from .flatten import flatten
from .gelu import gelu, gelu_tanh
from .gru import gru
from .layer_norm import layer_norm
from .lstm import lstm
from .mse import mse
from .pooling import avg_pool2d, max_pool2d
from .relu import relu
from .self_attention import causal_self_attention
from .rnn import rnn
from .sigmoid import sigmoid
from .softmax import softmax
from .softmax_cross_entropy import softmax_cross_entropy
from .tanh import tanh
from .time_affine import time_affine
from .time_softmax_cross_entropy import time_softmax_cross_entropy
from .transformer_block import transformer_block
from .weight_decay import with_weight_decay

__all__ = [
    "affine", "attention", "attention_weight", "avg_pool2d", "batch_norm", "causal_self_attention", "conv2d", "dropout", "embedding",
    "flatten", "gelu", "gelu_tanh", "gru", "layer_norm", "lstm", "mask_from_lengths", "max_pool2d", "mse", "relu", "rnn", "sigmoid",
    "softmax", "softmax_cross_entropy", "tanh", "time_affine", "time_attention", "time_attention_weights",
    "time_softmax_cross_entropy", "transformer_block", "truncated_bptt", "weight_sum", "with_weight_decay",
]
