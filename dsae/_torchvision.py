"""The one place that imports torchvision.

Only torchvision's pure-Python parts are used (``utils.draw_keypoints``, ``make_grid``),
never its C++ ops. Some torchvision wheels (e.g. 0.28.0 built for CUDA, installed beside a
CPU build of torch) carry a C++ extension that cannot load; ``import torchvision`` then
fails with "operator torchvision::nms does not exist", because its meta registrations for
``nms`` and ``qnms`` assume the extension defined those operators. Here, on exactly that
error, we define the two operator schemas (no kernels: calling them still fails loudly)
and import again. Everything else that torchvision registers is guarded by its own check.
"""

from __future__ import annotations

import sys

import torch

_STUB_OPS = ("nms", "qnms")
_stub_library = None  # kept alive: a torch.library.Library drops its definitions when freed


def _import():
    global _stub_library
    try:
        import torchvision
    except RuntimeError as err:
        if "torchvision::" not in str(err) or "does not exist" not in str(err):
            raise
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        _stub_library = torch.library.Library("torchvision", "FRAGMENT")
        for op in _STUB_OPS:
            _stub_library.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        import torchvision
    return torchvision


torchvision = _import()
from torchvision.utils import draw_keypoints, make_grid  # noqa: E402

__all__ = ["torchvision", "draw_keypoints", "make_grid"]
