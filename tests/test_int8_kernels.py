"""INT8 that holds on the x86 kernels that run it.

Without VNNI, x86 INT8 kernels sum u8 x s8 pairs in a saturating int16; 7-bit weights on the
GEMM convolutions make every x86 exact. The host's own kernels judge what they can; the AVX2-only
kernels are run for real under QEMU user mode (`-cpu Haswell`: AVX2, no AVX-512, no VNNI), the
way the ARM kernels are, whatever CPU this host is.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from evitdeploy import api, emulation
from evitdeploy.data import preprocess
from evitdeploy.device import cpu
from evitdeploy.device.metrics import cosine_per_sample
from evitdeploy.models import trained
from evitdeploy.precision.options import PrecisionOptions
from evitdeploy.precision.plan import PrecisionPlan
from evitdeploy.precision.qdq import quantize
from evitdeploy.precision.ranges import Ranges
from evitdeploy.requests import ExportRequest
from helpers import Cli, assert_clean_error

QEMU = emulation.qemu()
# The tests run under QEMU are in the slow tier too: emulated, each takes minutes.
needs_qemu = pytest.mark.skipif(
    QEMU is None,
    reason="needs qemu-x86_64 on an x86-64 host to run the AVX2-only kernels (apt-get install qemu-user; .ci/run installs it)",
)
HOST_SATURATES = cpu.kernel_class() in cpu.SATURATING


# --- the kernel class, from what the CPU says ------------------------------------------------


@pytest.mark.fast
@pytest.mark.parametrize(
    "flags, features, machine, expected",
    [
        ({"avx2", "avx512f", "avx512_vnni", "amx_int8"}, {"AVX2": True, "AVX512F": True, "AVX512VNNI": True}, "x86_64", cpu.AMX),
        ({"avx2", "avx512f", "avx512_vnni"}, {"AVX2": True, "AVX512F": True, "AVX512VNNI": True}, "x86_64", cpu.VNNI),
        ({"avx2", "avx_vnni"}, {"AVX2": True, "AVX512F": False, "AVX512VNNI": False}, "x86_64", cpu.VNNI),  # AVX-VNNI, no AVX-512
        ({"avx2", "fma"}, {"AVX2": True, "AVX512F": False, "AVX512VNNI": False}, "x86_64", cpu.AVX2),
        ({"asimd", "asimddp"}, {"ASIMDDP": True}, "aarch64", cpu.ARM_DOTPROD),
        ({"asimd"}, {"ASIMDDP": False}, "aarch64", cpu.ARM_NEON),
        (set(), {}, "riscv64", cpu.UNKNOWN),
    ],
)
def test_kernel_class_from_cpu_flags(flags, features, machine, expected):
    assert cpu.kernel_class(flags, features, machine) == expected


@pytest.mark.fast
def test_cpuid_wins_where_proc_cpuinfo_describes_another_cpu():
    # QEMU user mode passes the host's /proc/cpuinfo through; CPUID (numpy's view) is the emulated CPU's
    host_flags = {"avx2", "avx512f", "avx512_vnni", "amx_int8"}
    emulated = {"AVX2": True, "AVX512F": False, "AVX512VNNI": False}
    assert cpu.kernel_class(host_flags, emulated, "x86_64") == cpu.AVX2


@pytest.mark.fast
def test_only_full_8_bit_weights_on_a_saturating_cpu_are_refused():
    message, hint = cpu.refusal(cpu.VNNI, cpu.AVX2)
    assert "saturate" in message and "--int8-kernels any" in hint
    assert all(cpu.refusal(target, found) is None for target in cpu.TARGETS for found in cpu.CLASSES if (target, found) != (cpu.VNNI, cpu.AVX2))
    assert cpu.WEIGHT_BITS == {"any": 7, "avx2": 7, "vnni": 8}


def test_doctor_names_this_cpus_int8_kernels(cli):
    result = cli("doctor", "--json")
    found = json.loads(result.stdout)["cpu"]
    assert found["int8_kernels"] == cpu.kernel_class() and found["meaning"]
    assert "This CPU's INT8 kernels: " + cpu.kernel_class() in cli("doctor").stdout


# --- the trained digits, exported for any x86 and for VNNI --------------------------------------


@pytest.fixture(scope="module")
def digits(tmp_path_factory, digits_onnx):
    """FP32 and INT8 (plan, 7-bit GEMM weights: the default) ONNX exports of the trained digits B0 at
    64x64 (the session's), the same plan written with full 8-bit weights (what --int8-kernels vnni
    writes; made with the library so a host without VNNI can make it too), and 96 held-out digits."""
    folder = tmp_path_factory.mktemp("int8-kernels")
    for precision in ("fp32", "int8"):
        shutil.copytree(digits_onnx / precision, folder / precision)
    shutil.copy(digits_onnx / "calib.npz", folder / "calib.npz")
    plan = PrecisionPlan.from_dict(json.loads((folder / "int8" / "precision_plan.json").read_text()))
    ranges = Ranges.from_dict(json.loads((folder / "int8" / "ranges.json").read_text()))
    quantize(folder / "fp32" / "model.onnx", plan, ranges, folder / "vnni.onnx", weight_bits=8)
    test_images, labels = trained.digits_images("test")
    np.savez(folder / "held_out.npz", image=preprocess(list(test_images[:96]), trained.digits_spec(), 64, 64), label=labels[:96])
    return folder


def _conv_weights(path: Path) -> tuple[list, list]:
    """The INT8 weights of a QDQ model's convolutions: (GEMM ones, depthwise ones)."""
    model = onnx.load(str(path))
    initializers = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    producer = {output: node for node in model.graph.node for output in node.output}
    gemm, depthwise = [], []
    for node in model.graph.node:
        dequantize = producer.get(node.input[1]) if node.op_type == "Conv" else None
        if dequantize is None or dequantize.op_type != "DequantizeLinear":
            continue
        weight = initializers[dequantize.input[0]].astype(int)
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        (depthwise if weight.shape[1] == 1 and group == weight.shape[0] else gemm).append(weight)
    return gemm, depthwise


def test_default_int8_has_7_bit_gemm_weights_and_8_bit_depthwise(digits):
    manifest = json.loads((digits / "int8" / "manifest.json").read_text())
    assert manifest["int8_kernels"] == {"target": "any", "weight_bits": 7, "judged_on": cpu.kernel_class()}
    assert "7-bit" in manifest["precision_plan"]["conversion"]["weights"]
    plan = json.loads((digits / "int8" / "precision_plan.json").read_text())
    assert plan["settings"]["int8_kernels"] == "any" and plan["settings"]["weight_bits"] == 7
    gemm, depthwise = _conv_weights(digits / "int8" / "model.onnx")
    assert gemm and depthwise
    assert max(int(np.abs(w).max()) for w in gemm) <= 64  # a pair sums to at most 2 x 255 x 64 = 32640 < 32767
    assert max(int(np.abs(w).max()) for w in depthwise) == 127  # depthwise kernels widen each product: 8 bits
    full, _ = _conv_weights(digits / "vnni.onnx")
    assert max(int(np.abs(w).max()) for w in full) == 127


def _run(command: list, cwd=None, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENBLAS")}  # the emulated CPU is not the one they were set for
    return subprocess.run([str(c) for c in command], capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd)


def _on_avx2(*args: str) -> list[str]:
    return [QEMU, "-cpu", emulation.AVX2_ONLY_CPU, sys.executable, *args]


def _scores(found: dict, reference: np.ndarray, labels: np.ndarray) -> dict:
    return {key: {"cosine_min": float(cosine_per_sample(reference, z).min()), "top1": trained.classification_accuracy(z, labels)} for key, z in found.items()}


def test_default_int8_holds_on_this_hosts_kernels(digits):
    held_out = np.load(digits / "held_out.npz")
    found, _ = emulation.outputs(
        {"fp32": ("onnx", str(digits / "fp32" / "model.onnx"), "f32"), "any": ("onnx", str(digits / "int8" / "model.onnx"), "f32")},
        held_out["image"],
        on_avx2=False,
    )
    scores = _scores(found, found["fp32"], held_out["label"])
    assert scores["any"]["cosine_min"] >= 0.99 and scores["any"]["top1"] >= scores["fp32"]["top1"] - 0.01


@pytest.mark.slow
@needs_qemu
def test_avx2_kernels_saturate_full_8_bit_weights_and_sum_7_bit_ones_exactly(digits):
    """The same two models on AVX2-only kernels (QEMU) and on this host's: 7-bit GEMM weights give the
    host's outputs and keep the plan's accuracy; full 8-bit weights lose it there."""
    held_out = np.load(digits / "held_out.npz")
    models = {"any": ("onnx", str(digits / "int8" / "model.onnx"), "f32"), "vnni": ("onnx", str(digits / "vnni.onnx"), "f32")}
    here, _ = emulation.outputs({"fp32": ("onnx", str(digits / "fp32" / "model.onnx"), "f32"), **models}, held_out["image"], on_avx2=False)
    on_avx2, _ = emulation.outputs(models, held_out["image"], on_avx2=True)
    scores, native = _scores(on_avx2, here["fp32"], held_out["label"]), _scores(here, here["fp32"], held_out["label"])
    assert scores["any"]["cosine_min"] >= 0.99 and scores["any"]["top1"] >= native["fp32"]["top1"] - 0.01
    # the integer sums are exact on both; the float parts round differently in AVX2 and AVX-512 code, which can move a level
    agreement = cosine_per_sample(on_avx2["any"], here["any"])
    assert agreement.min() >= 0.999 and np.median(agreement) >= 0.999999, (agreement.min(), np.median(agreement))
    assert scores["vnni"]["cosine_min"] < scores["any"]["cosine_min"] - 0.01, scores
    if not HOST_SATURATES:  # on VNNI/AMX the full 8-bit model is the more accurate one
        assert native["vnni"]["cosine_min"] >= 0.99


@pytest.mark.slow
@needs_qemu
def test_check_on_avx2_refuses_a_vnni_only_model_and_judges_a_safe_one(digits, tmp_path):
    vnni = tmp_path / "vnni"
    shutil.copytree(digits / "int8", vnni)
    from evitdeploy.artifact import read_manifest
    from evitdeploy.files import write_json
    from evitdeploy.device.integrity import sha256_of

    manifest = read_manifest(vnni / "manifest.json")
    shutil.copyfile(digits / "vnni.onnx", vnni / "model.onnx")
    manifest["int8_kernels"] = {**manifest["int8_kernels"], "target": "vnni", "weight_bits": 8}
    manifest["files"]["model.onnx"] = {"sha256": sha256_of(vnni / "model.onnx"), "bytes": (vnni / "model.onnx").stat().st_size}
    write_json(vnni / "manifest.json", manifest)
    refused = _run(_on_avx2("-m", "evitdeploy", "check", str(vnni), "--json"))
    assert refused.returncode == 3, refused.stdout + emulation.quiet(refused.stderr)
    assert "is for VNNI kernels" in json.loads(refused.stdout)["error"] and "Traceback" not in refused.stderr
    judged = _run(_on_avx2("-m", "evitdeploy", "check", str(digits / "int8"), "--data", str(digits / "held_out.npz"), "--samples", "16", "--json"))
    assert judged.returncode == 0, judged.stdout + emulation.quiet(judged.stderr)
    report = json.loads(judged.stdout)
    assert report["int8_kernels"]["this_cpu"] == cpu.AVX2 and report["int8_kernels"]["target"] == "any"
    assert report["metrics"]["cosine_min"] >= 0.99


def test_check_refuses_a_vnni_only_model_where_the_cpu_has_no_vnni(cli, digits, tmp_path, monkeypatch):
    """The refusal on the host side, with this CPU's class forced to AVX2 (QEMU shows the real one above)."""
    monkeypatch.setattr(cpu, "kernel_class", lambda *a, **k: cpu.AVX2)
    manifest = json.loads((digits / "int8" / "manifest.json").read_text())
    assert manifest["int8_kernels"]["target"] == "any"
    passed = cli("check", digits / "int8", "--data", digits / "held_out.npz", "--samples", "4", "--json")
    assert json.loads(passed.stdout)["int8_kernels"]["this_cpu"] == cpu.AVX2
    folder = tmp_path / "out"
    refused = cli(
        "export", "--model", "efficientvit_b0", "--height", "64", "--width", "64", "-p", "int8", "--int8-kernels", "vnni", "--calib-count", "4", "-o", folder
    )
    assert_clean_error(refused, 3, "is for VNNI kernels", "--int8-kernels any")
    assert not folder.exists() and not list(tmp_path.glob(".out*"))


@pytest.mark.fast
@pytest.mark.parametrize(
    "args, fragment",
    [
        (("-p", "int8", "--int8-kernels", "sse"), "is not a kernel class"),
        (("-p", "fp32", "--int8-kernels", "any"), "--int8-kernels is for --precision int8"),
        (("-p", "int8", "-t", "tflite", "--int8-kernels", "vnni"), "--int8-kernels is for targets whose INT8 runs on x86 integer kernels"),
    ],
)
def test_int8_kernels_flag_is_refused_where_it_cannot_apply(cli, tmp_path, args, fragment):
    folder = tmp_path / "out"
    result = cli("export", "--model", "efficientvit_b0", "--height", "64", "--width", "64", *args, "-o", folder)
    assert_clean_error(result, 2, fragment)
    assert not folder.exists()


@pytest.mark.fast
def test_a_profiles_int8_kernels_must_fit_its_backends():
    from evitdeploy.errors import UserError
    from evitdeploy.profiles import load_profile, parse_profile

    assert load_profile("x86-cpu").int8_kernels == "any" and load_profile("intel-cpu").int8_kernels == "any"
    base = 'description = "d"\nbackend = "tflite"\nprecision = "int8"\nprecisions = ["int8"]\nint8_kernels = "vnni"\n'
    with pytest.raises(UserError, match="int8_kernels is for backends whose INT8 runs on x86 integer kernels"):
        parse_profile(base, "p", "p.toml")
    with pytest.raises(UserError, match="int8_kernels"):
        parse_profile(base.replace('"tflite"', '"onnxruntime"').replace('"vnni"', '"sse"'), "p", "p.toml")
    assert parse_profile(base.replace('"tflite"', '"onnxruntime"'), "p", "p.toml").int8_kernels == "vnni"


# --- OpenVINO: NNCF's overflow fix, and a float remainder every x86 compiles ---------------------


@pytest.mark.fast
def test_openvino_int8_for_any_x86_keeps_its_float_part_at_f32():
    from evitdeploy.backends.openvino.plan import float_precision

    assert float_precision("int8", True, "any") == "f32" and float_precision("int8", True, "avx2") == "f32"
    assert float_precision("int8", True, "vnni") == "bf16" and float_precision("int8", False, "vnni") == "f32"


@pytest.fixture(scope="module")
def openvino_digits(digits):
    """The trained digits B0 as OpenVINO INT8 for any x86 (overflow fix) and, where this CPU has VNNI,
    for VNNI (no overflow fix; refused here otherwise)."""
    pytest.importorskip("openvino", reason="needs the openvino extra")
    made = {}
    for kernels in ("any", "vnni"):
        request = ExportRequest(
            model="efficientvit_b0",
            target="openvino",
            precision="int8",
            checkpoint=trained.digits_checkpoint(),
            height=64,
            width=64,
            output=digits / f"openvino-{kernels}",
            reduced=PrecisionOptions(calib=str(digits / "calib.npz"), calib_count=64, int8_kernels=kernels),
        )
        if kernels == "vnni" and HOST_SATURATES:
            from evitdeploy.errors import UserError

            with pytest.raises(UserError, match="is for VNNI kernels") as refused:
                api.export_model(request)
            assert refused.value.exit_code == 3 and not request.output.exists()
            continue
        made[kernels] = api.export_model(request)
    return made


def test_openvino_int8_records_its_kernel_class_and_overflow_fix(openvino_digits):
    safe = openvino_digits["any"].manifest
    assert safe["int8_kernels"]["target"] == "any" and safe["export"]["openvino"]["inference_precision"] == "f32"
    assert "overflow fix on every layer" in safe["precision_plan"]["quantizer"]
    if "vnni" in openvino_digits:
        assert "no overflow fix" in openvino_digits["vnni"].manifest["precision_plan"]["quantizer"]


@pytest.mark.slow
@needs_qemu
def test_openvino_int8_for_any_x86_holds_on_avx2_kernels(digits, openvino_digits):
    held_out = np.load(digits / "held_out.npz")
    inputs, labels = held_out["image"][:48], held_out["label"][:48]
    here, _ = emulation.outputs({"fp32": ("onnx", str(digits / "fp32" / "model.onnx"), "f32")}, inputs, on_avx2=False)
    models = {kernels: emulation.model_of(artifact) for kernels, artifact in openvino_digits.items()}
    on_avx2, precisions = emulation.outputs(models, inputs, on_avx2=True)
    scores = _scores(on_avx2, here["fp32"], labels)
    assert precisions["any"] == "f32" and scores["any"]["cosine_min"] >= 0.99
    assert scores["any"]["top1"] >= trained.classification_accuracy(here["fp32"], labels) - 0.01
    if "vnni" in on_avx2:  # full 8-bit weights, no overflow fix: oneDNN's AVX2 kernels saturate them
        assert scores["vnni"]["cosine_min"] < 0.98, scores


# --- a bundle says what it is for, and verify.py names the CPU it finds ---------------------------


@pytest.fixture(scope="module")
def int8_bundle(digits):
    folder = digits / "bundle"
    result = Cli()(
        "deploy",
        "--profile",
        "x86-cpu",
        "-m",
        "efficientvit_b0",
        "-c",
        trained.digits_checkpoint(),
        "--height",
        "64",
        "--width",
        "64",
        "-p",
        "int8",
        "--calib",
        digits / "calib.npz",
        "--calib-count",
        "64",
        "--data",
        digits / "held_out.npz",
        "-o",
        folder,
        "--json",
    )
    assert result.exit_code == 0, result.output
    return folder, json.loads(result.stdout)


def test_an_x86_int8_bundle_says_which_cpus_it_is_for(int8_bundle):
    folder, summary = int8_bundle
    assert summary["check"]["int8_kernels"]["target"] == "any" and summary["check"]["int8_kernels"]["this_cpu"] == cpu.kernel_class()
    assert "--int8-kernels any" in summary["commands"]["export"]
    readme = (folder / "README.txt").read_text()
    assert "INT8 for any CPU (7-bit weights on the GEMM convolutions), judged on " + cpu.kernel_class() in readme
    report = _run([sys.executable, "-I", "verify.py", "--json", "--count", "2"], cwd=folder)
    assert report.returncode == 0, report.stderr
    assert json.loads(report.stdout)["host"]["int8_kernels"] == cpu.kernel_class()


@pytest.mark.slow
@needs_qemu
def test_verify_py_on_an_avx2_cpu_names_it_and_passes(int8_bundle):
    folder, _ = int8_bundle
    report = _run(_on_avx2("-I", "verify.py", "--count", "0"), cwd=folder)  # emulated latency means nothing
    assert report.returncode == 0, report.stdout + emulation.quiet(report.stderr)
    assert "INT8 kernels avx2 (the model is for any CPU)" in report.stdout and "PASSED" in report.stdout
