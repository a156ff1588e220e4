"""ExecuTorch on the device: a bundle carries this file as `evitdeploy_device/runtime.py`.

Numpy and the ExecuTorch runtime only (pip `executorch`, which brings the torch its tensors are),
Python 3.8 syntax, no evitdeploy imports (see evitdeploy.device.runtimes for what a device module
defines). The host runner runs a .pte through these functions too, so verify.py runs it as we do.

Every input is made C-contiguous first: ExecuTorch's Python runtime reads a channels-last strided
tensor (an HWC image transposed to NCHW, a numpy view) as if it were contiguous, with no error
(the trained digits classifier: 9.5% top-1 instead of 98.3%).
"""

import numpy as np

TARGET = "executorch"
RUNTIME = ("executorch.runtime", "executorch")
# The runtime's C++ side prints cpuinfo lines ("Failed to open midr file ...") on every load; none is an error.
SILENCE_NATIVE_LOAD = True


def registered_backends():
    """The delegates this runtime build can execute (the pip wheel: XNNPACK, not Core ML)."""
    from executorch.extension.pybindings import portable_lib

    return list(portable_lib._get_registered_backend_names())


def delegates_in(manifest):
    """The runtime backends a manifest says its .pte needs (export.delegates); anything but a list
    of names reads as none (a .pte that needs one anyway fails to load, with the runtime's error)."""
    export = manifest.get("export") if isinstance(manifest, dict) else None
    delegates = export.get("delegates") if isinstance(export, dict) else None
    return [name for name in delegates if isinstance(name, str)] if isinstance(delegates, list) else []


def missing_delegates(delegates):
    """The delegates (e.g. ["CoreMLBackend"]) this runtime cannot run."""
    have = set(registered_backends())
    return [name for name in delegates if name not in have]


def cannot_run_here(manifest):
    """A .pte lowered to a delegate this runtime lacks (Core ML, in the pip wheel) is refused (exit 3)."""
    try:
        missing = missing_delegates(delegates_in(manifest))
    except ImportError:
        return None  # not installed: the caller says what to install
    if missing:
        return (
            "this ExecuTorch runtime has no " + ", ".join(missing) + ": the .pte runs only in an app built with it",
            "run it in the app on the device (Core ML: iOS/macOS with ExecuTorch's CoreML backend)",
        )
    return None


def use_threads(threads):
    """ExecuTorch has one process-wide thread pool (XNNPACK's); resize it only when it differs."""
    if not threads:
        return
    from executorch.extension.pybindings import portable_lib

    if portable_lib._threadpool_get_thread_count() != threads:
        portable_lib._unsafe_reset_threadpool(int(threads))


# A .pte is a flatbuffer whose file identifier (bytes 4-8) is "ET" + the schema version ("ET12").
# Checked before the runtime sees the file: on some foreign bytes its loader logs them through
# pybind11, which cannot decode them, and the process aborts (SIGABRT) instead of raising.
IDENTIFIER = b"ET"


def looks_like_a_program(path):
    with open(str(path), "rb") as handle:
        head = handle.read(8)
    return len(head) == 8 and head[4:6] == IDENTIFIER and head[6:8].isdigit()


def executorch_method(path, threads=None):
    """The .pte's `forward`, loaded in ExecuTorch's Python runtime on `threads` threads."""
    from executorch.runtime import Runtime

    if not looks_like_a_program(path):
        raise ValueError("not an ExecuTorch program: no ET file identifier in its header")
    use_threads(threads)
    return Runtime.get().load_program(str(path)).load_method("forward")


def executorch_run(method, arrays, threads=None):
    """Float32 numpy arrays in (positional, in the program's input order), float32 numpy arrays out."""
    import torch

    use_threads(threads)
    tensors = [torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)) for array in arrays]
    return [np.asarray(output.detach().numpy(), dtype=np.float32) for output in method.execute(tensors)]


def input_shapes(method):
    """Each input's shape, read from the program's own metadata."""
    meta = method.metadata
    return [tuple(int(n) for n in meta.input_tensor_meta(i).sizes()) for i in range(meta.num_inputs())]


def open_model(path, manifest, threads):
    """infer(batch) -> float32 output; a dict of named inputs (a SAM prompt decoder, already padded
    to its point count) gives a dict of its outputs by name, in the manifest's order."""
    missing = missing_delegates(delegates_in(manifest))
    if missing:
        raise RuntimeError("this ExecuTorch runtime has no " + ", ".join(missing) + ": the .pte runs in an app built with it (Core ML: iOS/macOS)")
    method = executorch_method(path, threads)
    export = manifest.get("export", {})
    names = (export.get("decoder_inputs"), export.get("decoder_outputs"))

    def infer(batch):
        if isinstance(batch, dict):
            inputs, outputs = names
            if not all(isinstance(n, list) and all(isinstance(s, str) for s in n) for n in names) or set(inputs) - set(batch):
                raise ValueError("manifest export.decoder_inputs/decoder_outputs do not name this decoder's inputs and outputs")
            return dict(zip(outputs, executorch_run(method, [batch[name] for name in inputs], threads)))
        return executorch_run(method, [batch], threads)[0]

    infer.providers = ["ExecuTorch (" + (", ".join(delegates_in(manifest)) or "portable kernels") + ")"]
    return infer
