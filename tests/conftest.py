"""Fixtures (injected, never imported: shared code is in helpers.py) and the markers that skip
where this host lacks what a test needs."""

from __future__ import annotations

import collections
import os
import shutil
from pathlib import Path
from typing import Callable

import pytest
import torch

from helpers import SWEEP_ARGS, Cli

# Two threads in one process; one per worker under `pytest -n 2` (make test), so the workers do not
# oversubscribe the 2 cores (trained references set their own thread count while they train).
torch.set_num_threads(1 if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1 else 2)


@pytest.fixture
def cli() -> Cli:
    return Cli()


def _made_once(tmp_path_factory, name: str, make: Callable[[Path], None]) -> Path:
    """`make(folder)` once per run, shared by the xdist workers (each would otherwise export the same
    model): the first one makes it under a file lock, the others wait and read it."""
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the run's temporary folder, above each worker's own
    folder = root / "made-once" / name
    folder.parent.mkdir(parents=True, exist_ok=True)
    done = folder.with_name(name + ".done")
    with FileLock(str(folder) + ".lock"):
        if not done.is_file():
            shutil.rmtree(folder, ignore_errors=True)  # what a failed attempt left
            make(folder)
            done.touch()
    return folder


def _b0_export(folder: Path, size: int) -> None:
    result = Cli()("export", "--model", "efficientvit_b0", "--height", str(size), "--width", str(size), "--output", folder)
    assert result.exit_code == 0, result.output


def _b0_64_deploy(folder: Path) -> None:
    result = Cli()("deploy", "--profile", "x86-cpu", "--model", "efficientvit_b0", "--height", "64", "--width", "64", "--samples", "2", "-o", folder)
    assert result.exit_code in (0, 1), result.output


@pytest.fixture(scope="session")
def b0_64_artifact(tmp_path_factory):
    """A B0 classifier exported at 64x64 (its manifest says 64x64; the model's default is 224)."""
    return _made_once(tmp_path_factory, "b0-64", lambda folder: _b0_export(folder, 64))


@pytest.fixture(scope="session")
def b0_artifact(tmp_path_factory):
    """A B0 classifier exported once per run at 128x128 (small enough for fast tests)."""
    return _made_once(tmp_path_factory, "b0-128", lambda folder: _b0_export(folder, 128))


@pytest.fixture(scope="session")
def b0_64_bundle(tmp_path_factory):
    """An x86-cpu bundle of B0 at 64x64 (random weights; a parity verdict either way is fine here)."""
    return _made_once(tmp_path_factory, "b0-64-x86", _b0_64_deploy)


@pytest.fixture(scope="session")
def sweep_results(tmp_path_factory):
    """A real 1-model x 2-precision x 2-resolution sweep; bf16 is no ONNX precision, so those cells fail."""
    folder = tmp_path_factory.mktemp("sweep")
    results = folder / "results.jsonl"
    result = Cli()("sweep", *SWEEP_ARGS, "--output", results, "--json")
    assert result.exit_code == 1, result.output  # the bf16 cells fail, the sweep goes on
    return results, result


def _digits_exports(folder: Path, checkpoint: Path) -> None:
    """FP32, INT8 and FP16 ONNX exports of the trained digits B0 at 64x64, the plan's calibrated on
    64 training digits (calib.npz beside them)."""
    import numpy as np

    from evitdeploy import api
    from evitdeploy.models import trained
    from evitdeploy.precision.options import PrecisionOptions
    from evitdeploy.requests import ExportRequest

    folder.mkdir(parents=True)
    train_images, _ = trained.digits_images("train")
    np.savez(folder / "calib.npz", image=train_images[:64])
    for precision in ("fp32", "int8", "fp16"):
        api.export_model(
            ExportRequest(
                model="efficientvit_b0",
                target="onnx",
                precision=precision,
                output=folder / precision,
                checkpoint=checkpoint,
                height=64,
                width=64,
                reduced=PrecisionOptions(calib=str(folder / "calib.npz"), calib_count=64),
            )
        )


@pytest.fixture(scope="session")
def digits_onnx(tmp_path_factory, digits_checkpoint_path):
    """The trained digits B0's FP32, INT8 and FP16 ONNX artifacts (folders fp32/, int8/, fp16/),
    made once per run for every module that judges the precision plan on them."""
    return _made_once(tmp_path_factory, "digits-onnx", lambda folder: _digits_exports(folder, digits_checkpoint_path))


@pytest.fixture(scope="session")
def digits_checkpoint_path():
    """The trained digits classifier (B0, 10 classes, 64x64): ~30 s on first use, then cached
    under $EVITDEPLOY_CACHE or ~/.cache/evitdeploy."""
    from evitdeploy.models.trained import digits_checkpoint

    return digits_checkpoint()


@pytest.fixture(scope="session")
def mosaic_checkpoint_path():
    """The trained digit-mosaic segmenter (Seg-B0, 11 classes): ~1.5 min on first use, then cached."""
    from evitdeploy.models.trained import mosaic_checkpoint

    return mosaic_checkpoint()


@pytest.fixture(scope="session")
def sam_checkpoint_path():
    """The trained promptable model (efficientvit_sam_tiny on digit mosaics): ~3 min on first use,
    then cached like the others (models/trained_sam.py)."""
    from evitdeploy.models.trained_sam import promptable_checkpoint

    return promptable_checkpoint()


@pytest.fixture(scope="session")
def photo(tmp_path_factory):
    """A real photo, wider than tall (451x300): the square and 1:2 models each see a centre crop."""
    from PIL import Image
    from skimage import data

    path = tmp_path_factory.mktemp("photos") / "cat.png"
    Image.fromarray(data.chelsea()).save(path)
    return path


STANDIN = Path(__file__).parent / "standin"  # a stand-in `tensorrt` package and libcudart source


@pytest.fixture(scope="session")
def fake_cudart(tmp_path_factory) -> Path:
    """The folder of a stand-in libcudart.so (tests/standin/fake_cudart.c: host memory, real
    copies), compiled here; skips where there is no C compiler."""
    import subprocess

    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("needs a C compiler (cc) to build the stand-in libcudart")
    folder = tmp_path_factory.mktemp("cudart")
    subprocess.run([compiler, "-shared", "-fPIC", "-o", str(folder / "libcudart.so"), str(STANDIN / "fake_cudart.c")], check=True)
    return folder


@pytest.fixture
def standin_tensorrt(monkeypatch, fake_cudart):
    """TensorRT and CUDA stood in for, in this process: `import tensorrt` is tests/standin's
    recording, ONNX-Runtime-backed stand-in, and libcudart the compiled fake. Yields the stand-in."""
    import ctypes
    import sys

    from evitdeploy.backends.tensorrt import device

    monkeypatch.syspath_prepend(str(STANDIN))
    monkeypatch.delitem(sys.modules, "tensorrt", raising=False)  # tensorrt-stubs' namespace package, if imported
    import tensorrt

    tensorrt.RECORD["builds"].clear()
    monkeypatch.setattr(device, "load_cudart", lambda: ctypes.CDLL(str(fake_cudart / "libcudart.so")))
    yield tensorrt
    sys.modules.pop("tensorrt", None)


def _host_lacks(marker: str) -> str:
    """Why this host cannot run a test with this hardware marker ("" where it can)."""
    if marker == "macos":
        import platform

        return "" if platform.system() == "Darwin" else "needs macOS (Core ML predicts only on macOS)"
    if marker == "gpu":
        return "" if torch.cuda.is_available() else "needs an NVIDIA GPU (CUDA)"
    from evitdeploy.backends.tensorrt import runtime

    return "" if runtime.hasattr_builder() else "needs TensorRT (pip install 'evitdeploy[tensorrt]' on a host with an NVIDIA GPU)"


def pytest_collection_modifyitems(config, items):
    """The hardware markers skip, with the reason, where this host lacks the hardware or library;
    under xdist, the longest work is handed out first."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        _slow_modules_first(items)
    lacks = {}
    for item in items:
        reasons = []
        for marker in ("macos", "gpu", "tensorrt"):
            if item.get_closest_marker(marker) is not None:
                if marker not in lacks:
                    lacks[marker] = _host_lacks(marker)
                reasons.append(lacks[marker])
        reasons = [r for r in reasons if r]
        if reasons:
            item.add_marker(pytest.mark.skip(reason="; ".join(reasons)))


def _slow_modules_first(items) -> None:
    """Modules with slow tests first, then the larger ones (xdist's own order), each module's tests
    kept in order: the two workers then finish together instead of one waiting on a late SAM lowering."""
    module = {item: item.nodeid.split("::", 1)[0] for item in items}
    count = collections.Counter(module.values())
    slow = {module[item] for item in items if item.get_closest_marker("slow") is not None}
    items.sort(key=lambda item: (module[item] not in slow, -count[module[item]]))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """`make test` runs `-n 2 --dist loadgroup`: each module's tests go to one worker, so a module
    fixture (an export, a bundle) is built once; tests marked `xdist_group("ray")` go to one worker
    together, so only one Ray cluster runs at a time."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadGroupScheduling

    config.option.loadscopereorder = False  # keep the collection's order: _slow_modules_first

    class ModuleOrGroupScheduling(LoadGroupScheduling):
        def _split_scope(self, nodeid: str) -> str:
            group = super()._split_scope(nodeid)  # the nodeid itself when the test has no xdist_group
            return nodeid.split("::", 1)[0] if group == nodeid else group

    return ModuleOrGroupScheduling(config, log)
