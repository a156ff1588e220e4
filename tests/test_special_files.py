"""Paths that are not plain files, as inputs and as outputs: a character device (what /dev/null
is) is written into and never replaced; a FIFO, a symlink to /dev/zero, a folder, '', '.', a path
under /proc or /sys are one clear line (exit 2) before any work, and never block or read without end.

Character devices are made inside the test's folder (mknod, root only), never the system's own:
a regression would replace the test's device, not the machine's /dev/null.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from evitdeploy.errors import UserError
from helpers import assert_clean_error

B0 = "efficientvit_b0"


def null_device(path: Path) -> Path:
    """A character device like /dev/null (major 1, minor 3) at `path`; skips where mknod is not allowed."""
    try:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except OSError:
        pytest.skip("making a character device needs root and a container that allows mknod")
    return path


def is_device(path: Path) -> bool:
    return stat.S_ISCHR(os.lstat(path).st_mode)


def run_cli(*args, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """`evitdeploy ARGS` in a fresh process with a time limit: a read that blocks on a FIFO fails
    the test instead of hanging the suite."""
    try:
        return subprocess.run([sys.executable, "-m", "evitdeploy", *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"`evitdeploy {' '.join(map(str, args))}` still running after {timeout:.0f} s (blocked on a special file?)")


def assert_refused(done: subprocess.CompletedProcess, *fragments: str) -> None:
    text = done.stdout + done.stderr
    assert done.returncode == 2, text
    assert "Traceback" not in text, text
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, text
    for fragment in fragments:
        assert fragment in errors[0], text


@pytest.fixture
def results(b0_64_bundle, tmp_path):
    """A folder with a bench result twice (new and base) and a check result, from the session's bundle."""
    shutil.copyfile(b0_64_bundle / "bench.json", tmp_path / "new.json")
    shutil.copyfile(b0_64_bundle / "bench.json", tmp_path / "base.json")
    shutil.copyfile(b0_64_bundle / "check.json", tmp_path / "check.json")
    return tmp_path


# ---- outputs that are character devices: written into, never replaced ----


@pytest.mark.fast
def test_gate_markdown_and_save_into_a_character_device_leave_the_device_in_place(cli, results):
    device = null_device(results / "null")
    result = cli("gate", results / "new.json", "--baseline", results / "base.json", "--markdown", device, "--save", device)
    assert result.exit_code == 0, result.output
    assert is_device(device), "the device was replaced by a regular file"
    assert sorted(p.name for p in results.iterdir()) == ["base.json", "check.json", "new.json", "null"]


@pytest.mark.fast
def test_a_symlink_to_a_character_device_is_written_through_as_dev_stdout_is(cli, results):
    device = null_device(results / "null")
    link = results / "stdout.json"
    link.symlink_to(device)
    result = cli("gate", results / "new.json", "--baseline", results / "base.json", "--save", link)
    assert result.exit_code == 0, result.output
    assert link.is_symlink() and is_device(device)


def test_every_verb_that_saves_writes_into_a_character_device(cli, b0_64_artifact, b0_64_bundle, results, tmp_path):
    device = null_device(tmp_path / "null")
    report_device = null_device(tmp_path / "r.md")  # report takes its format from the suffix
    png_device = null_device(tmp_path / "p.png")
    photo = Path(__file__).parent / "data" / "photo.png"
    if not photo.is_file():
        from PIL import Image
        from skimage import data

        photo = tmp_path / "photo.png"
        Image.fromarray(data.coffee()[::4, ::4]).save(photo)
    runs = {
        "bench": ("bench", b0_64_artifact, "--count", "3", "--warmup", "1", "--threads", "1", "--save", device),
        "check": ("check", b0_64_artifact, "--samples", "1", "--save", device),
        "verify": ("verify", b0_64_bundle, "--count", "3", "--warmup", "1", "--save", device),
        "report": ("report", results / "check.json", results / "new.json", "-o", report_device),
        "predict": ("predict", b0_64_artifact, photo, "-o", png_device, "--force"),
    }
    for verb, args in runs.items():
        result = cli(*args)
        assert result.exit_code in (0, 1), f"{verb}: {result.output}"
        assert is_device(device) and is_device(report_device) and is_device(png_device), f"{verb} replaced a device"


# ---- outputs that are refused before any work ----


@pytest.mark.fast
@pytest.mark.parametrize(
    "name,fragment",
    [
        ("", "names no file of its own"),
        (".", "names no file of its own"),
        ("folder", "is a folder"),
        ("fifo", "is a FIFO"),
        ("/proc/evitdeploy-test", "under /proc"),
        ("/sys/evitdeploy-test", "under /sys"),
        ("plain/inside", "is not a folder"),
    ],
)
def test_bench_refuses_a_save_path_it_could_not_write_before_timing_anything(cli, b0_64_artifact, tmp_path, name, fragment, monkeypatch):
    (tmp_path / "folder").mkdir()
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "plain").write_text("a file\n")
    before = sorted(os.listdir(tmp_path))
    monkeypatch.chdir(tmp_path)
    result = cli("bench", b0_64_artifact, "--count", "20", "--warmup", "1", "--threads", "1", "--save", name)
    assert_clean_error(result, 2, fragment)
    assert "benchmarking" not in result.stderr, "refused only after the timing ran"
    assert sorted(os.listdir(tmp_path)) == before


@pytest.mark.fast
@pytest.mark.parametrize("name", ["", ".", "..", "/proc/evitdeploy-out"])
def test_export_and_deploy_refuse_an_output_of_no_name_of_its_own_before_exporting(cli, tmp_path, name, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for verb in (
        ("export", "--model", B0, "--height", "64", "--width", "64", "-o", name, "--force"),
        ("deploy", "--profile", "x86-cpu", "--model", B0, "--height", "64", "--width", "64", "-o", name, "--force"),
    ):
        assert_clean_error(cli(*verb), 2)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("name", ["", "."])
def test_deploy_refuses_a_save_of_no_name_before_writing_the_bundle(cli, tmp_path, name, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = cli("deploy", "--profile", "x86-cpu", "--model", B0, "--height", "64", "--width", "64", "--samples", "1", "-o", "bundle", "--save", name)
    assert_clean_error(result, 2, "names no file of its own")
    assert os.listdir(tmp_path) == [], "the bundle was written before --save was refused"


@pytest.mark.fast
def test_check_refuses_an_existing_folder_as_save_before_running_the_model(cli, b0_64_artifact, tmp_path):
    (tmp_path / "taken").mkdir()
    result = cli("check", b0_64_artifact, "--samples", "2", "--save", tmp_path / "taken")
    assert_clean_error(result, 2, "is a folder")
    assert "…" not in result.stderr, "refused only after the check ran"


@pytest.mark.fast
def test_sweep_refuses_artifacts_under_proc_and_leaves_no_results_file(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = cli("sweep", "--model", B0, "--resolution", "64", "--samples", "1", "--count", "5", "-o", "r.jsonl", "--artifacts", "/proc/evitdeploy-x")
    assert_clean_error(result, 2, "under /proc")
    assert os.listdir(tmp_path) == []


@pytest.mark.fast
def test_a_sweep_that_fails_before_its_first_record_removes_the_results_file_it_made(tmp_path):
    """A run that dies after the results file and artifacts folder were made (here: its executor
    fails at once) leaves neither; a file with recorded cells would stay, for the run to resume."""
    from evitdeploy.sweep.grid import Cell, CellSettings
    from evitdeploy.sweep.run import run_sweep

    class Failing:
        name = "failing"

        def prepare(self, cells, profiles):
            pass

        def run(self, cells, **_):
            raise RuntimeError("the executor fell over")

        def close(self):
            pass

    cell = Cell(model=B0, target="onnx", precision="fp32", height=64, width=64)
    with pytest.raises(RuntimeError):
        run_sweep([cell], tmp_path / "out" / "r.jsonl", artifacts=tmp_path / "out" / "art", settings=CellSettings(), executor=Failing())
    assert os.listdir(tmp_path) == []


@pytest.mark.fast
def test_a_folder_output_that_exists_as_a_fifo_is_refused_even_with_force(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    assert_refused(run_cli("export", "--model", B0, "--height", "64", "--width", "64", "-o", "fifo", "--force", cwd=tmp_path, timeout=60), "is a FIFO")
    assert stat.S_ISFIFO(os.lstat(tmp_path / "fifo").st_mode)


# ---- inputs that are not regular files ----


@pytest.fixture
def specials(tmp_path):
    os.mkfifo(tmp_path / "fifo.json")
    (tmp_path / "zero.json").symlink_to("/dev/zero")
    return tmp_path


@pytest.mark.parametrize("kind", ["fifo", "zero"])
def test_report_and_gate_refuse_a_fifo_or_dev_zero_without_blocking_or_reading_it(results, specials, kind):
    bad = specials / f"{kind}.json"
    what = "FIFO" if kind == "fifo" else "character device"
    assert_refused(run_cli("report", bad, cwd=specials, timeout=30), what)
    assert_refused(run_cli("gate", bad, "--baseline", results / "base.json", cwd=specials, timeout=30), what)
    assert_refused(run_cli("gate", results / "new.json", "--baseline", bad, "--json", cwd=specials, timeout=30), what)


def test_predict_deploy_and_export_refuse_a_fifo_image_profile_or_checkpoint(b0_64_artifact, specials):
    os.mkfifo(specials / "photo.png")
    os.mkfifo(specials / "mine.toml")
    os.mkfifo(specials / "weights.pt")
    assert_refused(run_cli("predict", b0_64_artifact, "photo.png", "-o", "out.png", cwd=specials, timeout=30), "FIFO")
    assert_refused(run_cli("deploy", "--profile", "mine.toml", "--model", B0, "-o", "b", cwd=specials, timeout=30), "FIFO")
    assert_refused(run_cli("export", "--model", B0, "--checkpoint", "weights.pt", "-o", "a", cwd=specials, timeout=30), "FIFO")
    assert sorted(os.listdir(specials)) == ["fifo.json", "mine.toml", "photo.png", "weights.pt", "zero.json"]


@pytest.mark.fast
def test_reads_are_bounded_whatever_size_the_filesystem_reports(tmp_path):
    """A file larger than its kind's bound is refused by its size, before reading; /proc files
    report size 0, so the read itself stops at the bound too."""
    from evitdeploy.files import read_input

    sparse = tmp_path / "huge.json"
    with open(sparse, "wb") as handle:
        handle.truncate((256 << 20) + 1)  # sparse: no disk used
    with pytest.raises(UserError, match="over 256 MiB"):
        read_input(sparse, "result file", "hint", limit=256 << 20)
    status = Path("/proc/self/status")
    assert status.stat().st_size == 0
    with pytest.raises(UserError, match="over"):
        read_input(status, "status", "hint", limit=16)
    assert b"Name:" in read_input(status, "status", "hint", limit=1 << 20)


@pytest.mark.fast
def test_report_on_a_file_over_the_json_bound_is_refused_at_once(cli, tmp_path):
    sparse = tmp_path / "huge.json"
    with open(sparse, "wb") as handle:
        handle.truncate((256 << 20) + 1)
    assert_clean_error(cli("report", sparse), 2, "over 256 MiB")


# ---- the library door itself ----


@pytest.mark.fast
def test_write_bytes_writes_into_a_device_and_refuses_other_special_files(tmp_path):
    from evitdeploy.files import write_bytes

    device = null_device(tmp_path / "null")
    write_bytes(device, b"discarded")
    assert is_device(device)
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(UserError, match="FIFO"):
        write_bytes(tmp_path / "fifo", b"x")  # refused, not blocked until a reader comes
    (tmp_path / "folder").mkdir()
    with pytest.raises(UserError, match="folder"):
        write_bytes(tmp_path / "folder", b"x")
    write_bytes(tmp_path / "plain.json", b"{}")
    write_bytes(tmp_path / "plain.json", b"[]")  # a regular file is replaced whole
    assert (tmp_path / "plain.json").read_bytes() == b"[]"


@pytest.mark.fast
def test_check_output_accepts_a_device_and_a_new_path_and_refuses_the_rest(tmp_path):
    from evitdeploy.files import check_output

    check_output(null_device(tmp_path / "null"), "--save file")
    check_output(tmp_path / "new" / "deeper" / "r.json", "--save file")
    for bad in ("", ".", "..", "/proc/x", "/sys/kernel/x", tmp_path, "/dev/zero/x"):
        with pytest.raises(UserError):
            check_output(Path(bad), "--save file")


# ---- one --address check ----


@pytest.mark.fast
@pytest.mark.parametrize("address", ["127.0.0.1:abc", "127.0.0.1:70000", "127.0.0.1:0", "", "host:", ":6379", "a b:1"])
def test_worker_sweep_and_deploy_refuse_the_same_bad_address(cli, tmp_path, address, monkeypatch):
    monkeypatch.chdir(tmp_path)
    worker = cli("worker", "--dry-run", "--address", address, "--json")
    sweep = cli("sweep", "--model", B0, "--resolution", "64", "-o", "r.jsonl", "--executor", "ray", "--address", address)
    deploy = cli("deploy", "--profile", "x86-cpu", "--model", B0, "--precision", "auto", "--executor", "ray", "--address", address, "-o", "b")
    for result in (worker, sweep, deploy):
        assert_clean_error(result, 2, "is not HOST:PORT")
    assert json.loads(worker.stdout)["exit_code"] == 2
    assert os.listdir(tmp_path) == []


@pytest.mark.fast
def test_a_good_address_still_plans_a_worker(cli):
    result = cli("worker", "--dry-run", "--address", "10.0.0.5:6379", "--json")
    assert result.exit_code == 0, result.output
    assert "--address=10.0.0.5:6379" in json.loads(result.stdout)["command"]
