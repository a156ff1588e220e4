"""Import timm as a test oracle beside a torch that torchvision cannot load.

torchvision's compiled ops do not register with the CPU torch here, so `import torchvision`
fails and timm (which imports a few torchvision names at module level) cannot import. We register
torchvision as a package whose __init__ does not run: its pure-Python transforms then import (the
eval transforms of timm and the reference are made of them) and the compiled ops are never loaded.
Where even that fails, a minimal stand-in package exposes just the names timm imports; none is
used by the EfficientViT model code that the oracle exercises.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types


class _Placeholder:
    """Stands in for torchvision classes/functions timm names but never calls here."""

    def __init__(self, *args, **kwargs):
        raise RuntimeError("torchvision stand-in: not available in this test environment")


def _stub_module(name: str) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__path__ = []  # a package, so submodule imports resolve to further stubs

    def __getattr__(attr: str):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _Placeholder

    module.__getattr__ = __getattr__
    return module


def _install_torchvision_stub() -> None:
    names = [
        "torchvision",
        "torchvision.transforms",
        "torchvision.transforms.functional",
        "torchvision.transforms.v2",
        "torchvision.transforms.v2.functional",
        "torchvision.ops",
        "torchvision.ops.misc",
        "torchvision.models",
        "torchvision.models.feature_extraction",
        "torchvision.datasets",
        "torchvision.io",
        "torchvision.utils",
    ]
    for name in names:
        sys.modules[name] = _stub_module(name)
    tf = sys.modules["torchvision.transforms"]
    tf.InterpolationMode = type("InterpolationMode", (), {k: k.lower() for k in ("NEAREST", "BILINEAR", "BICUBIC", "BOX", "HAMMING", "LANCZOS")})
    sys.modules["torchvision.transforms.functional"].InterpolationMode = tf.InterpolationMode
    for parent, child in [(n.rsplit(".", 1)) for n in names if "." in n]:
        setattr(sys.modules[parent], child, sys.modules[f"{parent}.{child}"])


def _install_bare_torchvision() -> bool:
    """torchvision as a package whose __init__ is not run: its pure-Python transforms (what timm's
    and the reference's eval transforms are made of) import; its compiled ops are never loaded."""
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return False
    package = types.ModuleType("torchvision")
    package.__path__ = list(spec.submodule_search_locations)
    sys.modules["torchvision"] = package
    try:
        importlib.import_module("torchvision.transforms")
    except Exception:
        _forget_torchvision()
        return False
    return True


def _forget_torchvision() -> None:
    for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
        del sys.modules[name]


def import_transforms():
    """torchvision.transforms (the real one, see _install_bare_torchvision), or None."""
    import_timm()
    module = sys.modules.get("torchvision.transforms")
    return module if module is not None and getattr(module, "Compose", _Placeholder) is not _Placeholder else None


def import_timm():
    """timm's efficientvit_mit module, or None when timm is not installed."""
    if importlib.util.find_spec("timm") is None:
        return None
    if "timm.models.efficientvit_mit" in sys.modules:
        return sys.modules["timm.models.efficientvit_mit"]
    try:
        import torchvision  # noqa: F401 (imported only to see whether it imports beside this torch)
    except Exception:
        _forget_torchvision()
        if not _install_bare_torchvision():
            _install_torchvision_stub()
    return importlib.import_module("timm.models.efficientvit_mit")
