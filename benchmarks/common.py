"""What the benchmark scripts share: tiny mode, skipping a missing backend, this CPU's facts,
quiet cached exports, runners taking turns, medians of alternating rounds, ONNX Runtime's per-op
profile, and the two outside contenders (the textbook ONNX export, NNCF's default INT8).

Not a benchmark itself (tests/test_benchmarks.py runs every other .py file here). Scripts import
it as `from common import ...`: Python puts a script's own folder first on sys.path. Importing it
is light (numpy and evitdeploy.device); torch and the backends load where a helper needs them.

Tiny mode (`--tiny` on every script): the smallest models, sizes and counts that still run every
code path of a script end to end in seconds; its figures mean nothing, it only proves the script
still works. A backend that is not installed (or a GPU, or macOS) makes a script print
"skipped: <why>" and exit 0 in tiny mode, exit 3 otherwise.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from evitdeploy.bench import host_info
from evitdeploy.device import cpu
from evitdeploy.device.metrics import time_turns
from evitdeploy.device.runtimes import native_stderr_silenced

TINY_HELP = "smallest models, sizes and counts that run every code path in seconds (a smoke run; its figures mean nothing)"
# The CPU features INT8 and BF16 speed depend on (printed first and saved with every result).
FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")


def add_tiny_flag(parser) -> None:
    parser.add_argument("--tiny", action="store_true", help=TINY_HELP)


def skip(reason: str, tiny: bool) -> None:
    """Stop: exit 0 in tiny mode (the smoke test passes where the backend is absent), 3 otherwise."""
    print(f"skipped: {reason}", flush=True)
    sys.exit(0 if tiny else 3)


def require(modules: tuple, install: str, tiny: bool) -> None:
    """Skip unless every module imports (`install`: how to get them)."""
    missing = [name for name in modules if not _importable(name)]
    if missing:
        skip(f"{', '.join(missing)} not installed ({install})", tiny)


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:  # a finder that refuses it (a device-only interpreter, the tests)
        return False


def cpu_facts(threads=None) -> dict:
    """This host (bench.host_info: CPU model, load, INT8 kernel class) and the CPU flags of FLAGS it has."""
    flags = cpu.proc_flags()
    return {**host_info(threads), **cpu.describe(), "flags": [f for f in FLAGS if f in flags]}


def host_line(facts: dict) -> str:
    return (
        f"{facts['cpu']}; {facts['logical_cpus']} CPUs; flags {' '.join(facts['flags']) or 'none of ' + ', '.join(FLAGS)}; "
        f"INT8 kernels {facts['int8_kernels']}; load {facts['load_average_1m']:.1f}"
    )


class Exports:
    """Each distinct export made once into `folder`, the converters' stderr silenced (a failure
    still raises); calling it gives (artifact, seconds the export took)."""

    def __init__(self, folder: Path, announce: bool = False):
        self.folder, self.announce, self.made = Path(folder), announce, {}

    def __call__(self, model: str, target: str, precision: str, **fields):
        calib = getattr(fields.get("reduced"), "calib", None)
        if calib and Path(calib).exists() and "data" not in fields:  # validated on the calibration's domain: a digits model is not judged on natural photos
            fields["data"] = Path(calib)
        key = (model, target, precision, repr(sorted(fields.items())))
        if key not in self.made:
            from evitdeploy import api
            from evitdeploy.requests import ExportRequest

            started = time.perf_counter()
            output = self.folder / f"{model}-{target}-{precision}-{len(self.made)}"
            with native_stderr_silenced(), contextlib.redirect_stderr(io.StringIO()):
                artifact = api.export_model(ExportRequest(model=model, target=target, precision=precision, output=output, force=True, **fields))
            self.made[key] = (artifact, time.perf_counter() - started)
            if self.announce:
                print(f"  exported {model} {target} {precision}: {self.made[key][1]:.0f} s", flush=True)
        return self.made[key]

    def artifact(self, model: str, target: str, precision: str, **fields):
        return self(model, target, precision, **fields)[0]


def turn_runner(artifact, threads: int):
    """An artifact's runner fit to take turns with others on the same cores."""
    from evitdeploy.backends import runner_for

    return runner_for(artifact, threads, taking_turns=True)


def outputs_per_image(artifact, inputs: np.ndarray, threads: int) -> np.ndarray:
    """The artifact's output for each image of `inputs`, one at a time, concatenated."""
    spec = artifact.spec
    with turn_runner(artifact, threads) as runner:
        return np.concatenate([runner.infer({spec.input_name: inputs[i : i + 1]})[spec.output_name] for i in range(len(inputs))])


def medians_in_turns(calls: dict, rounds: int = 4, per_round: int = 30, warmup: int = 5) -> dict:
    """Median ms of each call (label -> callable), timed in `rounds` turns of `per_round` runs, the
    order reversed every turn (device.metrics.time_turns), so a shared host's drift hits all alike."""
    samples = time_turns(list(calls.values()), warmup=warmup, count=rounds * per_round, block=per_round)
    return {label: float(np.median(s)) for label, s in zip(calls, samples)}


def alternating_medians(artifacts: dict, feed: dict, threads: int, rounds: int = 4, count: int = 30) -> dict:
    """Median ms of each artifact (key -> artifact), all loaded, timed in alternating rounds."""
    with contextlib.ExitStack() as stack:
        runners = {key: stack.enter_context(turn_runner(a, threads)) for key, a in artifacts.items()}
        return medians_in_turns({key: (lambda r=r: r.infer(feed)) for key, r in runners.items()}, rounds, count)


def ort_op_profile(model_path: Path, feed: dict, threads: int, runs: int = 10) -> list:
    """[(ONNX op type, share of kernel time)], largest first, from ONNX Runtime's profiler."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    options.enable_profiling = True
    options.profile_file_prefix = str(Path(model_path).with_suffix(""))
    session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    for _ in range(runs):
        session.run(None, feed)
    trace = Path(session.end_profiling())
    totals: dict = {}
    for event in json.loads(trace.read_text()):
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            op = event["args"].get("op_name", "?")
            totals[op] = totals.get(op, 0.0) + event["dur"]
    trace.unlink()
    whole = sum(totals.values()) or 1.0
    return sorted(((op, t / whole) for op, t in totals.items()), key=lambda x: -x[1])


def naive_export(model, spec, path: Path) -> None:
    """The textbook formulation (LiteMLA tokens on axis -2 with a padded ones row, F.interpolate
    bicubic), plain torch.onnx.export at opset 17, no graph preparation. Leaves the model textbook."""
    import torch

    model.set_formulation("textbook")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (torch.zeros(spec.input_shape),),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=[spec.input_name],
            output_names=[spec.output_name],
        )


def nncf_default(fp32_onnx: Path, calibration: np.ndarray, output: Path) -> Path:
    """NNCF's default post-training INT8 (no ignored scope, default preset) of an FP32 ONNX's IR."""
    import nncf
    import openvino as ov

    started = time.perf_counter()
    dataset = nncf.Dataset([calibration[i : i + 1] for i in range(len(calibration))])
    with native_stderr_silenced():
        quantized = nncf.quantize(ov.convert_model(str(fp32_onnx)), dataset, subset_size=len(calibration))
    output.mkdir(parents=True)
    ov.save_model(quantized, str(output / "model.xml"), compress_to_fp16=False)
    print(f"  NNCF default INT8: {time.perf_counter() - started:.0f} s", flush=True)
    return output
