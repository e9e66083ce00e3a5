"""fastoptim: training optimizers written once in C++, served as drop-in torch.optim classes."""

import torch  # noqa: F401  (torch must be loaded before the extension: it provides libtorch and libgomp)

from . import _C
from .optimizers import LAMB, SGD, AdaBelief, Adagrad, Adam, AdamW, AdEMAMix, Adan, RMSprop
from .wrappers import EMA, SWA, Lookahead, OptimizerWrapper, Scout

__all__ = ["SGD", "Adagrad", "RMSprop", "Adam", "AdamW", "AdaBelief", "AdEMAMix", "Adan", "LAMB", "Lookahead", "Scout", "EMA", "SWA", "OptimizerWrapper"]
__version__ = "0.1.0"
