"""Session-wide test set-up.

Triton reads ``TRITON_INTERPRET`` when it is first imported. Without a CUDA device the Triton
backend's tests run the kernels through the interpreter, so the variable is set before any test
module imports triton (timm, for the image towers, imports it too)."""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
