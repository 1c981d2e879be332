"""Results that do not depend on the number of CPU threads.

PyTorch's CPU matrix products (``nn.Linear``, and the im2col GEMMs of the Torch7 convolution path the
guided forward uses) run in Intel MKL. For some shapes MKL's default mode splits the inner dimension of
a product between threads, so the partial sums, and the float32 rounding of the result, depend on the
thread count: in VGG-16, the forward GEMMs of conv2_2, conv3_2/3, conv4_2/3 and conv5_x (inner
dimension 1152-4608) and fc8 (4096 inputs, one image), and the backward of the fully connected layers.
A run at ``OMP_NUM_THREADS=1`` (what torchrun sets) and a plain run on two cores then write PNGs that
differ by a grey level here and there. The oneDNN kernels (the other convolutions, every convolution
backward) and PyTorch's own reductions give the same bits at any thread count.

MKL's strict conditional numerical reproducibility mode (``MKL_CBWR="AUTO,STRICT"``: the code path
for this CPU, partitioned independently of the thread count) makes MKL's products the same at every
thread count. MKL reads ``MKL_CBWR`` once, at its first call in the process: setting it after
``import torch`` works, setting it after the first matrix product has no effect. The results are the
same for a given machine and library build; another CPU (another MKL code path) or another MKL may
still round differently.
"""
from __future__ import annotations

import os

#: The MKL mode :func:`thread_count_independent_blas` asks for.
MKL_CBWR_MODE = "AUTO,STRICT"


def thread_count_independent_blas() -> bool:
    """Ask MKL for products that give the same bits at every thread count (``MKL_CBWR``, see the module
    docstring), unless the environment already sets ``MKL_CBWR`` (the user's choice is kept).

    Must run before the process's first MKL call; ``import gradcam_core`` calls it. Returns True when
    the strict mode was requested here or by the environment.
    """
    current = os.environ.setdefault("MKL_CBWR", MKL_CBWR_MODE)
    return "STRICT" in current.upper()
