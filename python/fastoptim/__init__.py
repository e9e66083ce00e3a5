"""fastoptim: training optimizers written once in C++, served as drop-in torch.optim classes."""

import os

import torch  # noqa: F401  (torch must be loaded before the extension: it provides libtorch and libgomp)

from ._build_info import TORCH_VERSION as _BUILT_AGAINST


def _release(version: str) -> str:
    """'2.13.0' of '2.13.0+cpu': the C++ ABI follows the release, not the local build tag."""
    return version.split("+", 1)[0]


if _release(torch.__version__) != _release(_BUILT_AGAINST):
    raise ImportError(
        f"fastoptim was built against torch {_BUILT_AGAINST}, but torch {torch.__version__} is installed: its compiled "
        f"module cannot load under another torch. Rebuild it against this torch (in the fastoptim source folder: "
        f"pip install --no-build-isolation --no-deps --force-reinstall .) or install torch=={_release(_BUILT_AGAINST)}."
    )

from . import _C  # noqa: E402
from .optimizers import LAMB, LARS, SGD, AdaBelief, Adagrad, Adam, AdamP, AdamW, AdEMAMix, Adan, Lion, RaLars, RMSprop, TAdam
from .torch_family import ASGD, Adadelta, Adamax, NAdam, RAdam, Rprop
from .recent import ADOPT, AdamWScheduleFree, SGDScheduleFree, StepPower
from .muon import Muon
from .adafactor import Adafactor
from .amac import AMaC
from .hessian_diagonal import AdaHessian, SophiaG, SophiaH, SophiaOptim
from .wrappers import EMA, SWA, Lookahead, OptimizerWrapper, Scout
from .second_order import EGN, SGN, SQN, SWMNG, NewtonCG
from .factory import create_optimizer, list_optimizers, param_groups

__all__ = ["SGD", "Adagrad", "RMSprop", "Adam", "AdamW", "NAdam", "RAdam", "Adamax", "Adadelta", "ASGD", "Rprop", "Adafactor", "AdaBelief", "AdEMAMix", "Adan", "LAMB", "LARS", "RaLars", "TAdam", "AdamP", "AMaC", "Lion", "ADOPT", "Muon", "AdamWScheduleFree", "SGDScheduleFree", "SophiaG", "SophiaH", "AdaHessian", "SophiaOptim", "Lookahead", "Scout", "EMA", "SWA", "NewtonCG", "SQN", "EGN", "SGN", "SWMNG", "StepPower", "create_optimizer", "list_optimizers", "param_groups"]
__version__ = "0.1.0"

if _C.isa_request() is not None:  # FASTOPTIM_ISA named a table this build lacks or this CPU cannot run
    import warnings

    warnings.warn(
        f"FASTOPTIM_ISA={_C.isa_request()!r} is not one of this machine's kernel ISAs {_C.available_isas()}; "
        f"using {_C.isa()!r}",
        RuntimeWarning,
        stacklevel=2,
    )

#: where find_package(fastoptim) finds the installed CMake package (as torch.utils.cmake_prefix_path)
cmake_prefix_path = os.path.join(os.path.dirname(_C.__file__), "share", "cmake")
