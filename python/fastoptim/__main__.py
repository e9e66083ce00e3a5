"""python -m fastoptim: what this installation is (the demo is python -m fastoptim.demo)."""

import torch

import fastoptim

print(f"fastoptim {fastoptim.__version__} (torch {torch.__version__})")
print(f"kernels: {fastoptim._C.isa()} (this CPU runs {', '.join(fastoptim._C.available_isas())}); "
      f"threads: {fastoptim._C.max_threads()}")
print("optimizers (fastoptim.create_optimizer names):", " ".join(fastoptim.list_optimizers()))
