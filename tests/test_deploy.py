"""deploy end to end, bundles, and verify.py run where neither evitdeploy nor torch can be imported."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import Cli, assert_clean_error, on_device, rewrite_manifest
from evitdeploy.device.integrity import sha256_of
from evitdeploy.device.runtimes import version_findings


def deploy_cli(*args) -> object:
    return Cli()("deploy", *map(str, args))


@pytest.fixture(scope="module")
def fp32_bundle(tmp_path_factory):
    """x86-cpu, B0, FP32, at the model's own 224x224: the demo's bundle."""
    folder = tmp_path_factory.mktemp("deploy") / "b0-fp32"
    result = deploy_cli("--profile", "x86-cpu", "--model", "efficientvit_b0", "-o", folder, "--json")
    assert result.exit_code == 0, result.output
    return folder, json.loads(result.stdout)


@pytest.fixture(scope="module")
def int8_bundle(tmp_path_factory):
    folder = tmp_path_factory.mktemp("deploy") / "b0-int8"
    result = deploy_cli("--profile", "x86-cpu", "--model", "efficientvit_b0", "-p", "int8", "--calib-count", "16", "-o", folder, "--json")
    assert result.exit_code == 0, result.output
    return folder, json.loads(result.stdout)


def copy_bundle(folder: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(folder, tmp_path / folder.name))


def test_deploy_fp32_writes_a_complete_bundle(fp32_bundle):
    folder, summary = fp32_bundle
    assert summary["passed"] and summary["check"]["passed"] and summary["check"]["metrics"]["max_abs_error"] < 1e-4
    assert summary["latency"]["median_ms"] > 0 and summary["latency"]["threads"] == 2
    assert summary["budget"]["judged"] == (platform.machine().lower() in ("x86_64", "amd64"))
    names = {p.name for p in folder.iterdir()}
    assert {"model.onnx", "manifest.json", "reference.npz", "verify.py", "README.txt", "check.json", "bench.json", "evitdeploy_device"} <= names
    manifest = json.loads((folder / "manifest.json").read_text())
    assert set(manifest["files"]) == {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()} - {"manifest.json"}
    assert all(sha256_of(folder / n) == e["sha256"] for n, e in manifest["files"].items())
    bundle = manifest["bundle"]
    assert bundle["profile"]["name"] == "x86-cpu" and bundle["tolerances"]["max_abs"] == 1e-4
    assert manifest["toolchain"]["onnxruntime"] and manifest["spec"]["name"] == "efficientvit_b0"
    assert bundle["commands"]["export"].startswith("evitdeploy export --model efficientvit_b0 --target onnx --precision fp32")
    with np.load(folder / "reference.npz") as reference:
        assert reference["inputs"].shape == (4, 3, 224, 224) and reference["inputs"].dtype == np.float32
        assert reference["expected"].shape == (4, 1000)
        assert np.abs(reference["expected"] - reference["host_outputs"]).max() < 1e-4
    readme = (folder / "README.txt").read_text()
    assert "python3 verify.py" in readme and f"onnxruntime=={manifest['toolchain']['onnxruntime']}" in readme


def test_the_device_interpreter_really_lacks_torch_and_evitdeploy(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import numpy, onnxruntime\ntry:\n    import torch\nexcept ImportError:\n    print('no torch')\ntry:\n    import evitdeploy\nexcept ImportError:\n    print('no evitdeploy')\n"
    )
    result = on_device(probe)
    assert result.stdout.split("\n")[:2] == ["no torch", "no evitdeploy"], result.stderr


@pytest.mark.parametrize("which", ["fp32", "int8"])
def test_verify_py_passes_on_the_device_without_evitdeploy_or_torch(which, fp32_bundle, int8_bundle):
    folder, _ = fp32_bundle if which == "fp32" else int8_bundle
    result = on_device(folder / "verify.py", "--json", "--count", "5")
    assert result.returncode == 0, result.stderr + result.stdout
    report = json.loads(result.stdout)
    assert report["passed"] and report["precision"] == which and report["latency"]["count"] == 5
    assert report["drift_from_making_host"]["max_abs_error"] < 1e-5  # same runtime, same host


def test_int8_bundle_carries_the_plan_and_stays_small(int8_bundle):
    folder, summary = int8_bundle
    manifest = json.loads((folder / "manifest.json").read_text())
    assert "precision_plan.json" in manifest["files"] and manifest["precision_plan"]["summary"]["nodes"]["int8"] > 0
    assert manifest["calibration"]["count"] == 16
    assert summary["sizes"]["extra_bytes"] < 5e6
    assert summary["check"]["metrics"]["cosine_min"] >= 0.98


def test_verify_py_fails_on_an_altered_reference_output(fp32_bundle, tmp_path):
    folder = copy_bundle(fp32_bundle[0], tmp_path)
    with np.load(folder / "reference.npz") as reference:
        arrays = dict(reference)
    arrays["expected"] = arrays["expected"] + 0.5  # a reference the model no longer matches
    np.savez(folder / "reference.npz", **arrays)
    rewrite_manifest(folder, lambda m: m["files"]["reference.npz"].update(sha256=sha256_of(folder / "reference.npz")))
    result = on_device(folder / "verify.py", "--count", "0")
    assert result.returncode == 1, result.stderr + result.stdout
    assert "FAILED: max abs error 0.5" in result.stdout


@pytest.mark.parametrize(
    "damage, fragment",
    [
        (lambda f: f.joinpath("model.onnx").write_bytes(f.joinpath("model.onnx").read_bytes()[:-10] + b"0123456789"), "model.onnx does not match the sha256"),
        (lambda f: f.joinpath("reference.npz").unlink(), "reference.npz is listed in the manifest but missing"),
        (lambda f: rewrite_manifest(f, lambda m: m.update(format=99)), "manifest format 99, newer than this verifier reads (1)"),
        (lambda f: f.joinpath("manifest.json").write_text("{not json"), "is not valid JSON"),
    ],
    ids=["tampered model", "missing file", "newer format", "corrupt manifest"],
)
def test_untrusted_bundle_is_refused_on_the_device_and_here(damage, fragment, fp32_bundle, tmp_path, cli):
    folder = copy_bundle(fp32_bundle[0], tmp_path)
    damage(folder)
    device = on_device(folder / "verify.py")
    assert device.returncode == 2 and fragment in device.stderr and "Traceback" not in device.stderr, device.stderr
    assert_clean_error(cli("verify", folder), 2, fragment)


def test_newer_manifest_is_refused_by_check_and_bench_too(fp32_bundle, tmp_path, cli):
    folder = copy_bundle(fp32_bundle[0], tmp_path)
    rewrite_manifest(folder, lambda m: m.update(format=2))
    assert_clean_error(cli("bench", folder, "--count", "1"), 2, "manifest format 2")


def test_evitdeploy_verify_and_check_take_a_bundle(fp32_bundle, cli):
    folder, _ = fp32_bundle
    result = cli("verify", folder, "--count", "3", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["passed"] and report["parity"]["metrics"]["samples"] == 4 and not report["warnings"]
    assert cli("check", folder, "--samples", "2").exit_code == 0  # the bundle manifest is an artifact manifest


def test_runtime_version_mismatch_warns_and_is_an_error_for_engines(fp32_bundle, tmp_path, cli):
    folder = copy_bundle(fp32_bundle[0], tmp_path)
    rewrite_manifest(folder, lambda m: m["toolchain"].update(onnxruntime="1.0.0"))
    report = json.loads(cli("verify", folder, "--count", "1", "--json").stdout)
    assert report["passed"] and report["warnings"] == [f"onnxruntime here is {report['runtime']['onnxruntime']}, the bundle was made and checked with 1.0.0"]
    from evitdeploy.backends.tensorrt import device as trt_device

    warnings, errors = version_findings({"target": "trt", "toolchain": {"tensorrt": "10.0.0"}}, {"tensorrt": "10.1.0"}, trt_device)
    assert errors and not warnings


def _profile(tmp_path: Path, extra: str, machine: str) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(
        'description = "test"\nbackend = "onnxruntime"\nprecision = "fp32"\nprecisions = ["fp32"]\n'
        f"[input]\nheight = 64\nwidth = 64\n[bench]\nthreads = 1\nwarmup = 1\ncount = 5\n[host]\nmachine = [{machine!r}]\n{extra}"
    )
    return path


def test_budget_exceeded_on_a_host_of_that_kind_exits_1_and_keeps_the_evidence(tmp_path):
    profile = _profile(tmp_path, "[budget]\nlatency_ms = 0.0001\n", platform.machine())
    result = deploy_cli("--profile", profile, "--model", "efficientvit_b0", "-o", tmp_path / "out", "--json")
    assert result.exit_code == 1, result.output
    summary = json.loads(result.stdout)
    assert summary["budget"]["judged"] and summary["budget"]["passed"] is False and summary["check"]["passed"]
    assert "exceeds the tiny budget of 0.0001 ms" in summary["failures"][0]
    assert (tmp_path / "out" / "verify.py").is_file()
    assert on_device(tmp_path / "out" / "verify.py", "--count", "3").returncode == 1  # judged there too


def test_budget_on_another_kind_of_host_is_reported_not_judged(tmp_path):
    profile = _profile(tmp_path, "[budget]\nlatency_ms = 0.0001\n", "riscv64")
    result = deploy_cli("--profile", profile, "--model", "efficientvit_b0", "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "not judged" in result.stdout and "riscv64" in result.stdout


def test_parity_failure_exits_1(tmp_path):
    profile = _profile(tmp_path, "[tolerances.fp32]\nmax_abs = 1e-12\n", "riscv64")
    result = deploy_cli("--profile", profile, "--model", "efficientvit_b0", "-o", tmp_path / "out", "--json")
    assert result.exit_code == 1
    assert json.loads(result.stdout)["failures"][0].startswith("max abs error")


def test_segmentation_bundle_verifies_on_the_device(tmp_path):
    profile = _profile(tmp_path, "", "riscv64").read_text().replace("height = 64\nwidth = 64", "height = 128\nwidth = 256")
    (tmp_path / "seg.toml").write_text(profile)
    folder = tmp_path / "seg"
    result = deploy_cli("--profile", tmp_path / "seg.toml", "--model", "efficientvit_seg_b0_cityscapes", "-o", folder)
    assert result.exit_code == 0, result.output
    device = on_device(folder / "verify.py", "--json", "--count", "2")
    assert device.returncode == 0, device.stderr
    assert json.loads(device.stdout)["parity"]["metrics"]["pixel_agreement"] >= 0.999


@pytest.mark.fast
@pytest.mark.parametrize(
    "args, code, fragment",
    [
        (("--profile", "x86-cpu", "--model", "efficientvit_b0", "-p", "fp8"), 2, "profile x86-cpu does not offer precision 'fp8'"),
        (("--profile", "arm64-cpu", "--model", "efficientvit_b0", "-p", "fp16"), 2, "does not offer precision 'fp16'"),
        (("--profile", "x86-cpu", "--model", "efficientvit_b9"), 2, "unknown model"),
        (("--profile", "x86-cpu", "--model", "efficientvit_b0", "--samples", "0"), 2, "--samples 0"),
        (("--profile", "x86-cpu", "--model", "efficientvit_b0", "-p", "int8", "--calib", "/no/such/dir"), 2, "calibration data not found"),
    ],
)
def test_bad_deploy_input_is_one_line_and_writes_nothing(args, code, fragment, tmp_path, cli):
    result = cli("deploy", *args, "-o", tmp_path / "out")
    assert_clean_error(result, code, fragment)
    assert list(tmp_path.iterdir()) == []


def test_existing_output_needs_force(fp32_bundle, cli):
    assert_clean_error(cli("deploy", "--profile", "x86-cpu", "--model", "efficientvit_b0", "-o", fp32_bundle[0]), 2, "already exists")


def test_deploy_trained_checkpoint_with_own_data_verifies_on_the_device(tmp_path, digits_checkpoint_path):
    """Real weights (the digits classifier), calibration and reference data from the user's .npz."""
    from evitdeploy.models import trained

    train, _ = trained.digits_images("train")
    test, _ = trained.digits_images("test")
    np.savez(tmp_path / "calib.npz", image=train[:32])
    np.savez(tmp_path / "test.npz", image=test[:8])
    folder = tmp_path / "digits"
    result = deploy_cli(
        "--profile",
        "x86-cpu",
        "--model",
        "efficientvit_b0",
        "-c",
        digits_checkpoint_path,
        "--height",
        "64",
        "--width",
        "64",
        "-p",
        "int8",
        "--calib",
        tmp_path / "calib.npz",
        "--data",
        tmp_path / "test.npz",
        "-o",
        folder,
        "--json",
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["check"]["data"].startswith("arrays from") and summary["check"]["metrics"]["samples"] == 8
    assert f"--calib {tmp_path / 'calib.npz'}" in summary["commands"]["export"] and "-c" not in summary["commands"]["export"].split()
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["spec"]["num_classes"] == 10 and manifest["source"]["checkpoint_sha256"] == sha256_of(digits_checkpoint_path)
    with np.load(folder / "reference.npz") as reference:
        assert reference["expected"].shape == (4, 10)
    device = on_device(folder / "verify.py", "--json", "--count", "3")
    assert device.returncode == 0, device.stderr
    assert json.loads(device.stdout)["parity"]["metrics"]["top1_agreement"] == 1.0


@pytest.mark.parametrize(
    "change, fragment",
    [
        (lambda m: m["files"].update({"../outside.onnx": {"sha256": "0", "bytes": 1}}), "'../outside.onnx', which is not a file inside the folder"),
        (lambda m: m.update(model_file="other.onnx"), "other.onnx is not covered by a sha256"),
        (lambda m: m["files"].pop("reference.npz"), "reference.npz is not covered by a sha256"),
    ],
    ids=["path outside", "unlisted model file", "unlisted reference"],
)
def test_a_manifest_cannot_point_outside_its_hashes(change, fragment, fp32_bundle, tmp_path, cli):
    folder = copy_bundle(fp32_bundle[0], tmp_path)
    rewrite_manifest(folder, change)
    assert on_device(folder / "verify.py").returncode == 2
    assert_clean_error(cli("verify", folder), 2, fragment)


def test_verify_refuses_an_export_folder_that_is_no_bundle(b0_artifact, cli):
    assert_clean_error(cli("verify", b0_artifact), 2, "is not a bundle manifest")


def _carried_sources() -> dict:
    """Every Python file a bundle of any target carries, by a name saying where it comes from."""
    from evitdeploy import bundle, device
    from evitdeploy.backends import BACKENDS, module

    folder = Path(device.__file__).parent
    sources = {f"device/{name}": (folder / name).read_text() for name in bundle.DEVICE_FILES}
    sources.update({f"backends/{b.folder}/device.py": Path(module(b, "device").__file__).read_text() for b in BACKENDS.values()})
    return {**sources, "verify.py (bundle.VERIFY_MAIN)": bundle.VERIFY_MAIN}


def test_every_file_a_bundle_carries_stays_python_3_8_syntax():
    """Jetson JetPack 5 ships Python 3.8: everything the device runs must parse there."""
    import ast

    for name, source in _carried_sources().items():
        ast.parse(source, feature_version=(3, 8), filename=name)


def test_device_code_imports_numpy_the_standard_library_and_its_own_runtime_only():
    """A device has no evitdeploy (and Pillow only for preprocessing): evitdeploy/device/ imports its own modules relatively, and a
    backend's device.py imports nothing of evitdeploy at all (it is copied into bundles)."""
    import ast

    from evitdeploy.backends import BACKENDS, module

    runtimes = {b.device_runtime[0].split(".")[0] for b in BACKENDS.values()} | {m for b in BACKENDS.values() for m in b.device_imports}
    for name, source in _carried_sources().items():
        optional = {"model_signing"}  # imported only for --public-key (exit 3 with the install line without it)
        if name == "device/preprocess.py":
            optional = optional | {"PIL"}  # Pillow resizes photos (every Pi, Jetson and Termux has it); imported only to resize
        allowed = set(sys.stdlib_module_names) | {"numpy", "evitdeploy_device"} | (runtimes if "backends/" in name else optional)
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ImportFrom) and node.level:
                assert name.startswith("device/"), f"{name}: a relative import (it is carried alone, as runtime.py)"
                continue
            found = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module] if isinstance(node, ast.ImportFrom) else []
            assert all(f.split(".")[0] in allowed for f in found), f"{name} imports {found}"
    for backend in BACKENDS.values():
        runtime = module(backend, "device")
        assert runtime.TARGET == backend.name and runtime.RUNTIME == backend.device_runtime
        assert getattr(runtime, "VERSION_BOUND", False) == backend.version_bound


def test_a_bundle_carries_the_device_package_and_its_targets_runtime(fp32_bundle):
    from evitdeploy import bundle, device
    from evitdeploy.backends.onnxruntime import device as onnx_device

    folder, _ = fp32_bundle
    carried = folder / "evitdeploy_device"
    assert sorted(p.name for p in carried.iterdir()) == sorted((*bundle.DEVICE_FILES, "runtime.py"))  # no __pycache__ after the device runs
    assert (carried / "runtime.py").read_bytes() == Path(onnx_device.__file__).read_bytes()
    assert all((carried / n).read_bytes() == (Path(device.__file__).parent / n).read_bytes() for n in bundle.DEVICE_FILES)
    assert (folder / "verify.py").read_text() == bundle.VERIFY_MAIN and len(bundle.VERIFY_MAIN.splitlines()) < 20
    files = json.loads((folder / "manifest.json").read_text())["files"]
    assert {f"evitdeploy_device/{n}" for n in (*bundle.DEVICE_FILES, "runtime.py")} | {"verify.py"} <= set(files)


def test_a_bundle_made_before_the_device_package_still_verifies(fp32_bundle, tmp_path, cli):
    """Bundles already on devices carry one self-contained verify.py (tests/data/verify_v1.py, the
    device_verify.py of the time) and no evitdeploy_device/: `evitdeploy verify` still passes
    them, and their own verify.py still runs there."""
    import shutil

    folder = copy_bundle(fp32_bundle[0], tmp_path)
    shutil.rmtree(folder / "evitdeploy_device")
    shutil.copyfile(Path(__file__).parent / "data" / "verify_v1.py", folder / "verify.py")

    def old_file_list(manifest):
        files = {n: e for n, e in manifest["files"].items() if not n.startswith("evitdeploy_device/")}
        files["verify.py"] = {"sha256": sha256_of(folder / "verify.py"), "bytes": (folder / "verify.py").stat().st_size}
        manifest["files"] = dict(sorted(files.items()))

    rewrite_manifest(folder, old_file_list)
    result = cli("verify", folder, "--count", "2", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["passed"]
    device = on_device(folder / "verify.py", "--json", "--count", "2")
    assert device.returncode == 0, device.stderr + device.stdout
    assert json.loads(device.stdout)["passed"]
    plain = subprocess.run([sys.executable, "-I", "verify.py", "--count", "2"], cwd=folder, capture_output=True, text=True, timeout=120)
    assert plain.returncode == 0 and plain.stdout.strip().endswith("PASSED"), plain.stderr + plain.stdout
