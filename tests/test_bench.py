import time

import pytest

from evitdeploy.bench import host_info, measure, summarize

pytestmark = pytest.mark.fast  # statistics and timing loops on stand-ins, no export


def test_summary_statistics_of_known_samples():
    stats = summarize([1.0, 2.0, 3.0, 4.0, 100.0], batch=2)
    assert stats["count"] == 5 and stats["median_ms"] == 3.0
    assert stats["min_ms"] == 1.0 and stats["max_ms"] == 100.0
    assert abs(stats["mean_ms"] - 22.0) < 1e-9
    assert abs(stats["throughput_per_s"] - 2 * 1000 / 3.0) < 1e-9
    assert stats["p90_ms"] > stats["median_ms"]


def test_measure_runs_warmup_then_the_requested_count():
    calls = []
    samples = measure(lambda: calls.append(1), warmup=3, count=7)
    assert len(samples) == 7 and len(calls) == 10


def test_measure_keeps_going_until_the_minimum_duration():
    started = time.perf_counter()
    samples = measure(lambda: time.sleep(0.01), warmup=0, count=1, min_time_s=0.2)
    assert time.perf_counter() - started >= 0.2
    assert len(samples) >= 10


def test_host_info_records_threads_and_cpu():
    info = host_info(2)
    assert info["threads"] == 2 and info["logical_cpus"] >= 1 and info["cpu"]


def _fake_mlpackage(folder):
    """A Core ML-like package: a folder of files (no coremltools needed)."""
    package = folder / "model.mlpackage"
    (package / "Data" / "weights").mkdir(parents=True)
    (package / "Manifest.json").write_text('{"fileFormatVersion": "1.0.0"}')
    (package / "Data" / "model.mlmodel").write_bytes(b"spec" * 100)
    (package / "Data" / "weights" / "weight.bin").write_bytes(bytes(range(256)) * 40)
    return package


def test_a_package_folder_has_one_size_and_one_identity(tmp_path):
    from evitdeploy.artifact import model_sha256, model_size

    package = _fake_mlpackage(tmp_path)
    assert model_size(package) == len('{"fileFormatVersion": "1.0.0"}') + 400 + 256 * 40
    single = tmp_path / "model.onnx"
    single.write_bytes(b"onnx" * 10)
    assert model_size(single) == 40
    identity = model_sha256(package)
    assert len(identity) == 64 and identity == model_sha256(package)
    copy = tmp_path / "copy" / "model.mlpackage"
    copy.parent.mkdir()
    import shutil

    shutil.copytree(package, copy)
    assert model_sha256(copy) == identity  # the content decides, not where the folder is
    (copy / "Data" / "weights" / "weight.bin").rename(copy / "Data" / "weights" / "other.bin")
    assert model_sha256(copy) != identity  # a renamed file is another package
    shutil.rmtree(copy)
    shutil.copytree(package, copy)
    (copy / "Data" / "model.mlmodel").write_bytes(b"spec" * 99 + b"spex")
    assert model_sha256(copy) != identity


def test_bench_summary_of_a_core_ml_package_names_its_size_and_identity(tmp_path):
    """The manifest lists a package's files, not the folder: the summary must not hash the folder."""
    from evitdeploy.api import bench_summary
    from evitdeploy.artifact import Artifact, build_manifest
    from evitdeploy.models import get_spec

    package = _fake_mlpackage(tmp_path)
    spec = get_spec("efficientvit_b0").with_input(1, 64, 64)
    manifest = build_manifest(tmp_path, "coreml", "fp32", spec, package.name)
    artifact = Artifact(tmp_path, package, "coreml", "fp32", spec, manifest)
    summary = bench_summary(artifact, spec, 1, [], "single")
    from evitdeploy.artifact import model_sha256, model_size

    assert summary["artifact_bytes"] == model_size(package) == sum(e["bytes"] for e in manifest["files"].values())
    assert summary["artifact_sha256"] == model_sha256(package)
