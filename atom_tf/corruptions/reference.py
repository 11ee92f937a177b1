"""`imagecorruptions` (the reference implementation, 2020 release) made importable and runnable
on NumPy 2 and current scikit-image, without pinning old versions and without changing numpy
or scikit-image for anyone else.

Three incompatibilities, each patched in the module's own namespace:
- `np.float_` (removed in NumPy 2) in `plasma_fractal` (fog): the module sees a numpy proxy
  that also has `float_`;
- `skimage.filters.gaussian(..., multichannel=True)` (removed in scikit-image 0.19) in
  gaussian_blur and glass_blur: the module's `gaussian` maps it to `channel_axis=-1`;
- `pkg_resources` (gone from recent setuptools) for the frost photographs: a stand-in that
  resolves files next to the package, in sys.modules only while the module is imported.
"""

from __future__ import annotations

import importlib
import os
import sys
import types

import numpy as np

_module = None


class _NumpyWithFloat(types.ModuleType):
    def __getattr__(self, name):
        if name == "float_":
            return np.float64
        return getattr(np, name)


def _gaussian_compat(image, sigma=1, multichannel=None, **kwargs):
    from skimage.filters import gaussian

    if multichannel:
        kwargs.setdefault("channel_axis", -1)
    return gaussian(image, sigma=sigma, **kwargs)


def reference_module():
    """The patched `imagecorruptions.corruptions` module."""
    global _module
    if _module is not None:
        return _module
    try:
        import pkg_resources  # noqa: F401

        stand_in = None
    except ImportError:
        stand_in = types.ModuleType("pkg_resources")

        def resource_filename(package: str, path: str) -> str:
            spec = importlib.util.find_spec(package)
            return os.path.join(os.path.dirname(spec.origin), path)

        stand_in.resource_filename = resource_filename
        sys.modules["pkg_resources"] = stand_in
    try:
        corruptions = importlib.import_module("imagecorruptions.corruptions")
    finally:  # only for that import: other code (pytest) takes a pkg_resources for the real one
        if stand_in is not None and sys.modules.get("pkg_resources") is stand_in:
            del sys.modules["pkg_resources"]
    corruptions.np = _NumpyWithFloat("numpy")
    corruptions.gaussian = _gaussian_compat
    _module = corruptions
    return corruptions


def reference_corrupt(image: np.ndarray, name: str, severity: int) -> np.ndarray:
    """imagecorruptions.corrupt on one uint8 H×W×3 image (ImageNet-C constants); uses the
    global NumPy random state as the package does. Returns uint8."""
    reference_module()
    from imagecorruptions import corrupt

    return np.uint8(corrupt(image, severity=severity, corruption_name=name))


def frost_photograph_paths() -> list[str]:
    """The six frost photographs the package ships (found without importing it: its import
    needs `pkg_resources`, which only reference_module() provides where setuptools lacks it)."""
    folder = os.path.join(
        os.path.dirname(importlib.util.find_spec("imagecorruptions").origin), "frost"
    )
    return [
        os.path.join(folder, f)
        for f in (
            "frost1.png",
            "frost2.png",
            "frost3.png",
            "frost4.jpg",
            "frost5.jpg",
            "frost6.jpg",
        )
    ]
