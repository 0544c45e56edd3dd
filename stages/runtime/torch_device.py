"""Where and in what precision a model backend runs.

Only the backends that run PyTorch models import this module, so torch's version enters the
keys of their items and no others: a CPU backend's dataset is the same bytes whether or not
torch is installed beside it (`make demo` leaves it out, `make test` adds it).
"""

from __future__ import annotations


def torch_device(setting: str) -> str:
    """`auto` -> cuda when a GPU is visible, else cpu; anything else as given."""
    if setting != "auto":
        return setting
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def torch_dtype(precision: str, device: str):
    """fp16 on CUDA and fp32 on CPU for `auto`; the named dtype otherwise."""
    import torch

    if precision == "auto":
        return torch.float16 if device.startswith("cuda") else torch.float32
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
