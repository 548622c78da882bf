"""Importing the torch model stack (transformers, diffusers, open_clip) safely.

open_clip needs torchvision, and on a machine with a CPU-only torch the only torchvision
wheel on offer may be a CUDA build whose compiled ops cannot load. torchvision then
still registers a fake kernel for `torchvision::nms` at import, which fails because the
op was never defined — and that breaks every library that imports torchvision
(transformers' PreTrainedModel, diffusers' models, open_clip). When, and only when, the
compiled ops cannot load, the two op schemas it needs are defined here first, so the
import succeeds; the ops stay without kernels, and nothing in cinema calls them.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path


@functools.cache
def prepare_torch() -> None:
    """Call before importing transformers, diffusers or open_clip."""
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return
    import torch

    libraries = sorted(Path(spec.submodule_search_locations[0]).glob("_C*.so"))
    if not libraries:
        return
    try:
        torch.ops.load_library(str(libraries[0]))
    except OSError:
        library = torch.library.Library("torchvision", "FRAGMENT")
        for op in ("nms", "qnms"):
            library.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _keep.append(library)  # a Library deregisters its definitions when collected


_keep: list = []
