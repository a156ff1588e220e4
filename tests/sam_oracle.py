"""Import Meta's segment_anything modeling code as a test oracle, without its package __init__.

`segment_anything/__init__.py` imports the predictor and mask generator, which import torchvision,
and torchvision's compiled ops do not register with the CPU torch here. The modeling subpackage
(prompt encoder, mask decoder, transformer) and `utils.onnx` (SAM's ONNX recipe) need only torch
and numpy, so we register an empty top-level package in sys.modules whose __path__ is the
installed folder, and import just those.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types

PACKAGE = "segment_anything"
MODULES = {
    "common": "modeling.common",
    "prompt_encoder": "modeling.prompt_encoder",
    "transformer": "modeling.transformer",
    "mask_decoder": "modeling.mask_decoder",
    "sam": "modeling.sam",
    "onnx": "utils.onnx",
}


def _bare_package(name: str, path: str) -> types.ModuleType:
    """A package module whose __init__ is not run: submodule imports resolve under `path`."""
    module = types.ModuleType(name)
    module.__path__ = [path]
    module.__package__ = name
    return module


def import_sam() -> types.SimpleNamespace | None:
    """Meta's modules as a namespace (common, prompt_encoder, transformer, mask_decoder, sam, onnx),
    or None when segment-anything is not installed."""
    if PACKAGE not in sys.modules:  # an __init__ that did run (or our bare package) is kept
        spec = importlib.util.find_spec(PACKAGE)  # finds the folder; runs no __init__
        if spec is None:
            return None
        sys.modules[PACKAGE] = _bare_package(PACKAGE, list(spec.submodule_search_locations)[0])
    return types.SimpleNamespace(**{name: importlib.import_module(f"{PACKAGE}.{path}") for name, path in MODULES.items()})
