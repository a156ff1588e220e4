"""Sweeps on a real multi-node Ray cluster on this machine: the farm proven end to end.

Ray's own `ray.cluster_utils.Cluster` starts a head and nodes on 127.0.0.1 (Ray binds loopback only
when told this is a one-machine cluster, below); the nodes advertise profiles as the farm's custom
resources, the sweep runs as a real `evitdeploy` process (the driver), and the test kills workers
and drivers. Every wait is bounded.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # before Ray is imported: the cluster listens on 127.0.0.1 only
pytest.importorskip("ray", reason="the farm tests need ray (pip install 'evitdeploy[farm]')")

from helpers import X86_TEST_PROFILE, assert_clean_error
from evitdeploy.errors import UserError
from evitdeploy.sweep import read_records
from evitdeploy.sweep.farm.executor import unservable
from evitdeploy.sweep.farm.packing import pack, unpack
from evitdeploy.sweep.farm.resources import NODE, advertised
from evitdeploy.sweep.grid import Cell

# Slow tier (real clusters); under `make test` every test here shares one worker with the other
# Ray tests, so two clusters never run at once.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ray")]

BACKENDS = ["onnxruntime", "openvino"]
STORE = 256 * 2**20
GRID = ("--model", "efficientvit_b0", "--precision", "fp32", "--samples", "1", "--warmup", "1", "--threads", "1")
SWEEP_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def farm():
    """A head that only exports (no profile), an x86-cpu node that only benches (`worker --bench-only`)
    and an intel-cpu node that does both."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "resources": advertised([], BACKENDS), "include_dashboard": False, "object_store_memory": STORE},
    )
    try:
        x86 = cluster.add_node(num_cpus=1, resources=advertised(["x86-cpu"], BACKENDS, exports=False), object_store_memory=STORE)
        intel = cluster.add_node(num_cpus=1, resources=advertised(["intel-cpu"], BACKENDS), object_store_memory=STORE)
        cluster.wait_for_nodes()
        yield SimpleNamespace(cluster=cluster, address=cluster.address, nodes={"x86-cpu": x86.node_id, "intel-cpu": intel.node_id})
    finally:
        cluster.shutdown()


class Driver:
    """`evitdeploy sweep` as its own process; its stdout and its progress lines (stderr) are read
    as they come by two threads, so a large --json summary never fills a pipe. `as_background_job`
    starts it the way a shell script's `... &` does: with SIGINT ignored."""

    def __init__(self, *args, cwd: Path, as_background_job: bool = False):
        env = {**os.environ, "COLUMNS": "400"}  # progress lines unwrapped
        command = [sys.executable, "-m", "evitdeploy", "sweep", *map(str, args)]
        if as_background_job:
            command = ["sh", "-c", 'trap "" INT; exec "$0" "$@"', *command]  # exec keeps the ignored SIGINT
        self.process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._stderr_torn = False  # its last line had no end
        self._stdout: list[str] = []
        self._readers = [
            threading.Thread(target=self._read_stderr, daemon=True),
            threading.Thread(target=lambda: self._stdout.append(self.process.stdout.read()), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read_stderr(self) -> None:
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))
            self._stderr_torn = not line.endswith("\n")

    @property
    def output(self) -> str:
        return "".join(self._stdout)

    @property
    def whole_lines(self) -> bool:
        """Both streams end with a line's end (or are empty): nothing was cut mid-line."""
        return not self._stderr_torn and (self.output == "" or self.output.endswith("\n"))

    def wait_for(self, text: str, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while not any(text in line for line in list(self.lines)):
            assert self.process.poll() is None, f"the sweep ended before {text!r}: {self.lines[-5:]}"
            assert time.monotonic() < deadline, f"no {text!r} within {timeout_s} s: {self.lines[-5:]}"
            time.sleep(0.2)

    def finish(self, timeout_s: float = SWEEP_TIMEOUT_S) -> int:
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            pytest.fail(f"the sweep did not end within {timeout_s} s: {self.lines[-5:]}")
        for reader in self._readers:
            reader.join(timeout=30)
        return self.process.returncode


def _sweep(farm, tmp_path: Path, *args) -> tuple[int, dict, Driver]:
    driver = Driver(*GRID, *args, "--executor", "ray", "--address", farm.address, "--json", cwd=tmp_path)
    code = driver.finish()
    return code, json.loads(driver.output) if driver.output.strip() else {}, driver


def _overlaps(a: list, b: list) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def test_bench_cells_land_on_their_profile_node_and_hold_it_alone(farm, tmp_path):
    code, summary, driver = _sweep(farm, tmp_path, "--profile", "x86-cpu,intel-cpu", "--resolution", "64,64x96", "--count", "30", "-o", "grid.jsonl")
    assert code == 0, driver.lines[-5:]
    records = read_records(tmp_path / "grid.jsonl")
    assert len(records) == 4 and summary["executor"] == "ray"
    stages = []  # (node, stage, cell, [start, end]) for every stage of every cell
    for record in records:
        profile = record["cell"]["profile"]
        assert record["status"] == "ok" and record["executor"] == "ray"
        assert record["nodes"]["bench"]["node_id"] == farm.nodes[profile]  # benched on the node of its profile, nowhere else
        assert record["nodes"]["export"]["node_id"] != farm.nodes["x86-cpu"]  # a bench-only node never exports
        assert profile in record["nodes"]["bench"]["profiles"]
        assert record["cell"]["target"] == {"x86-cpu": "onnx", "intel-cpu": "openvino"}[profile]
        assert (tmp_path / record["artifact"]).is_dir()  # the artifact came back to the driver, sha256-checked
        stages += [
            (record["nodes"][stage]["node_id"], stage, record["cell"]["resolution"] + profile, record["timeline"][stage]) for stage in ("export", "bench")
        ]
    for node, stage, cell, span in stages:
        if stage == "bench":
            others = [(s, c) for n, s, c, other in stages if n == node and (s, c) != (stage, cell) and _overlaps(span, other)]
            assert not others, f"{cell}'s bench shared its node with {others}"
    report = subprocess.run([sys.executable, "-m", "evitdeploy", "report", "grid.jsonl", "--json"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    devices = {row["device"] for row in json.loads(report.stdout)["rows"]}
    assert {device.split("@")[0] for device in devices} == {"x86-cpu", "intel-cpu"}


def test_a_grid_the_farm_cannot_serve_is_refused_before_any_work(farm, tmp_path):
    code, _, driver = _sweep(farm, tmp_path, "--profile", "x86-cpu,arm64-cpu", "--resolution", "64", "-o", "grid.jsonl")
    errors = [line for line in driver.lines if line.startswith("error:")]
    assert code == 3 and len(errors) == 1, driver.lines
    assert "no node is profile arm64-cpu with onnxruntime (1 cell)" in errors[0] and "x86-cpu" in errors[0]
    assert not (tmp_path / "grid.jsonl").exists() and not (tmp_path / "grid-artifacts").exists()
    assert not any("Traceback" in line for line in driver.lines)


def test_a_worker_killed_mid_bench_fails_that_cell_and_the_sweep_ends(farm, tmp_path):
    doomed = farm.cluster.add_node(num_cpus=1, resources=advertised(["arm64-cpu"], BACKENDS), object_store_memory=STORE)
    farm.cluster.wait_for_nodes()
    driver = Driver(
        *GRID,
        "--profile",
        "arm64-cpu",
        "--resolution",
        "64",
        "--min-time",
        "120",
        "--executor",
        "ray",
        "--address",
        farm.address,
        "-o",
        "grid.jsonl",
        "--json",
        cwd=tmp_path,
    )
    driver.wait_for("benching on a node of profile arm64-cpu")
    time.sleep(3)  # the bench has the node now
    killed = time.monotonic()
    farm.cluster.remove_node(doomed, allow_graceful=False)
    assert driver.finish(timeout_s=150) == 1
    assert time.monotonic() - killed < 100  # not the 120 s the bench would have timed
    (record,) = read_records(tmp_path / "grid.jsonl")
    assert record["status"] == "failed" and record["stage"] == "bench"
    assert "died" in record["error"].lower() or "no live node" in record["error"], record["error"]


def test_a_bench_whose_node_dies_is_retried_on_another_node_of_its_profile(farm, tmp_path):
    first = farm.cluster.add_node(num_cpus=1, resources=advertised(["arm64-cpu"], ["onnxruntime"]), object_store_memory=STORE)
    farm.cluster.wait_for_nodes()
    driver = Driver(
        *GRID,
        "--profile",
        "arm64-cpu",
        "--resolution",
        "64",
        "--min-time",
        "15",
        "--executor",
        "ray",
        "--address",
        farm.address,
        "-o",
        "grid.jsonl",
        "--json",
        cwd=tmp_path,
    )
    driver.wait_for("benching on a node of profile arm64-cpu")
    time.sleep(4)  # the bench holds the first node
    second = farm.cluster.add_node(num_cpus=1, resources=advertised(["arm64-cpu"], ["onnxruntime"]), object_store_memory=STORE)
    farm.cluster.wait_for_nodes()
    farm.cluster.remove_node(first, allow_graceful=False)
    try:
        assert driver.finish(timeout_s=180) == 0, driver.lines[-5:]
    finally:
        farm.cluster.remove_node(second)
    (record,) = read_records(tmp_path / "grid.jsonl")
    assert record["status"] == "ok" and record["nodes"]["bench"]["node_id"] == second.node_id


def test_a_killed_driver_leaves_whole_lines_and_a_rerun_resumes(farm, tmp_path):
    args = ("--profile", "x86-cpu,intel-cpu", "--resolution", "64,64x96", "--count", "5", "-o", "grid.jsonl")
    driver = Driver(*GRID, *args, "--executor", "ray", "--address", farm.address, cwd=tmp_path)
    results = tmp_path / "grid.jsonl"
    deadline = time.monotonic() + SWEEP_TIMEOUT_S
    while not (results.exists() and results.read_bytes().count(b"\n") >= 1):
        assert driver.process.poll() is None and time.monotonic() < deadline, driver.lines[-5:]
        time.sleep(0.1)
    driver.process.kill()
    driver.finish()
    first = read_records(results)
    assert 1 <= len(first) <= 4
    code, summary, _ = _sweep(farm, tmp_path, *args)
    assert code == 0 and len(summary["skipped"]) == len(first) and len(summary["ran"]) == 4 - len(first)
    assert len({Cell.from_dict(r["cell"]).key for r in read_records(results)}) == 4 == len(read_records(results))


# Moments of a two-cell farm sweep (bf16 fails its export at once, fp32 benches for minutes): the
# progress line the SIGINT follows, the seconds after it, and the cells whose records may be in the
# results file by then.
CTRL_C_MOMENTS = [
    ("cell(s) to run with the ray executor", 0, [[], ["bf16"]]),  # while `import ray` / ray.init run
    ("cell(s) to run with the ray executor", 0.5, [[], ["bf16"]]),
    ("cell(s) for the farm", 1, [[], ["bf16"]]),  # while the cells export
    ("[1/2]", 0, [["bf16"]]),  # between cells: a record just written, the fp32 cell in flight
    ("benching on a node of profile x86-cpu", 0, [["bf16"]]),  # while the bench holds its node
]


def _farm_idle(farm, timeout_s: float = 30) -> bool:
    """No task holds any farm node: every node's evitdeploy-node units are free again."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        total, free = farm.cluster.global_state.total_resources_per_node(), farm.cluster.global_state.available_resources_per_node()
        if all(free.get(node, {}).get(NODE, 0) == units.get(NODE, 0) for node, units in total.items()):
            return True
        time.sleep(0.5)
    return False


@pytest.mark.parametrize("as_background_job", [False, True], ids=["from-a-terminal", "as-a-background-job"])
def test_ctrl_c_at_any_moment_stops_the_farm_sweep_cleanly(farm, tmp_path, as_background_job):
    """Exit 130 within seconds, whole lines, whole records, no farm task left running; also when the
    driver was started with SIGINT ignored, as a shell script's background job is."""
    grid = [*GRID[: GRID.index("--precision")], *GRID[GRID.index("--precision") + 2 :], "--precision", "fp32,bf16"]
    for number, (line, delay_s, recorded) in enumerate(CTRL_C_MOMENTS):
        folder = tmp_path / str(number)
        folder.mkdir()
        driver = Driver(
            *grid,
            "--profile",
            "x86-cpu",
            "--resolution",
            "64",
            "--min-time",
            "120",
            "--executor",
            "ray",
            "--address",
            farm.address,
            "-o",
            "grid.jsonl",
            cwd=folder,
            as_background_job=as_background_job,
        )
        driver.wait_for(line)
        time.sleep(delay_s)
        stopped = time.monotonic()
        driver.process.send_signal(signal.SIGINT)
        code = driver.finish(timeout_s=60)
        moment = f"SIGINT {delay_s} s after {line!r}"
        assert code == 130, (moment, code, driver.lines[-8:])
        assert time.monotonic() - stopped < 30, moment
        assert driver.lines[-1] == "interrupted" and driver.whole_lines, (moment, driver.lines[-8:], driver.output[-200:])
        assert not any("Traceback" in text for text in driver.lines), (moment, driver.lines)
        results = (folder / "grid.jsonl").read_bytes() if (folder / "grid.jsonl").exists() else b""
        assert results == b"" or results.endswith(b"\n"), moment  # whole records only: a re-run resumes from them
        assert [record["cell"]["precision"] for record in read_records(folder / "grid.jsonl")] in recorded, (moment, results[-300:])
        assert _farm_idle(farm), f"{moment}: a farm task still holds a node"


def test_sweep_executor_ray_without_address_starts_ray_here(tmp_path):
    driver = Driver(*GRID, "--target", "onnx", "--resolution", "64", "--count", "5", "--executor", "ray", "-o", "here.jsonl", "--json", cwd=tmp_path)
    assert driver.finish() == 0, driver.lines[-5:]
    (record,) = read_records(tmp_path / "here.jsonl")
    assert record["status"] == "ok" and record["executor"] == "ray"
    assert "x86-cpu" in record["nodes"]["bench"]["profiles"]  # this x86 host advertises what it is


def test_deploy_auto_measures_the_candidates_on_a_farm_node_of_the_profile(farm, tmp_path, digits_checkpoint_path):
    """Measured and evaluated on the profile's node: the weights and the labelled data travel there."""
    from evitdeploy.models.references import write_datasets

    profile = tmp_path / "x86-cpu.toml"  # a profile's name is its file's: the farm has an x86-cpu node
    profile.write_text(X86_TEST_PROFILE.format(precision="fp32", precisions='["fp32"]', candidates='["onnxruntime", "openvino"]', max_abs="1e-4"))
    data = write_datasets(tmp_path / "datasets", digits=30, mosaics=0, promptable=0)
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "evitdeploy",
            "deploy",
            "--profile",
            str(profile),
            "--model",
            "efficientvit_b0",
            "--checkpoint",
            str(digits_checkpoint_path),
            "--dataset",
            str(data["digits"]),
            "--max-drop",
            "0",
            "-p",
            "auto",
            "--samples",
            "1",
            "--executor",
            "ray",
            "--address",
            farm.address,
            "-o",
            "bundle",
            "--json",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=SWEEP_TIMEOUT_S,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    selection = json.loads(run.stdout)["selection"]
    assert selection["executor"] == "ray" and len(selection["candidates"]) == 2
    for record in read_records(Path(selection["results"])):
        assert record["nodes"]["bench"]["node_id"] == farm.nodes["x86-cpu"]  # measured on the profile's node
        assert record["eval"]["dataset"]["images"] == 30 and record["eval"]["delta"]["top1"]["value"] == 0.0  # FP32: PyTorch's answers
    assert all(row["accuracy"]["drop_pt"] == 0.0 for row in selection["candidates"]) and selection["max_drop_pt"] == 0.0
    assert (tmp_path / "bundle" / "manifest.json").is_file()


# ---- without a cluster ----


def test_an_artifact_whose_sha256_changed_in_transit_is_refused(tmp_path):
    folder = tmp_path / "art"
    folder.mkdir()
    (folder / "model.onnx").write_bytes(b"weights")
    packed = pack(folder)
    assert unpack(packed, tmp_path / "ok").joinpath("model.onnx").read_bytes() == b"weights"
    damaged = type(packed)(packed.name, packed.data.replace(b"weights", b"WEIGHTS"), packed.sha256)
    with pytest.raises(UserError, match="sha256"):
        unpack(damaged, tmp_path / "bad")
    assert not (tmp_path / "bad" / "art").exists()


def test_unservable_names_what_the_farm_lacks():
    nodes = [{"resources": advertised(["x86-cpu"], ["onnxruntime"])}]
    cells = [
        Cell("m", "onnx", "fp32", 64, 64, "x86-cpu"),
        Cell("m", "onnx", "fp32", 64, 64, "arm64-cpu"),
        Cell("m", "tflite", "int8", 64, 64, "raspberry-pi-5"),
    ]
    assert unservable(cells[:1], nodes) is None
    assert unservable(cells, nodes) == "no node is profile arm64-cpu with onnxruntime (1 cell); no node that takes exports has the tflite backend (1 cell)"
    bench_only = [{"resources": advertised(["x86-cpu"], ["onnxruntime"], exports=False)}]
    assert unservable(cells[:1], bench_only) == "no node that takes exports has the onnxruntime backend (1 cell)"


def test_worker_advertises_only_what_this_host_is(cli):
    plan = json.loads(cli("worker", "--head", "--dry-run", "--json").stdout)
    assert "evitdeploy-profile:x86-cpu" in plan["resources"] and "evitdeploy-backend:onnxruntime" in plan["resources"]
    assert not any("jetson" in key for key in plan["resources"])
    assert plan["command"][1:3] == ["start", "--head"] and "evitdeploy-exports" in plan["resources"]
    assert "evitdeploy-exports" not in json.loads(cli("worker", "--head", "--bench-only", "--dry-run", "--json").stdout)["resources"]
    assert_clean_error(cli("worker", "--address", "127.0.0.1:6379", "--profile", "jetson-orin-nano"), 2, "cannot advertise profile jetson-orin-nano")
    assert_clean_error(cli("worker", "--head", "--address", "127.0.0.1:6379", "--dry-run"), 2, "exactly one of")
    assert_clean_error(cli("worker", "--dry-run"), 2, "exactly one of")


@pytest.mark.parametrize(
    "args,message",
    [
        (("--executor", "slurm"), "unknown executor"),
        (("--address", "127.0.0.1:6379"), "--address is for --executor ray"),
        (("--executor", "ray", "--address", "not an address"), "is not HOST:PORT"),
        (("--executor", "ray", "--address", "127.0.0.1:1"), "cannot reach the Ray head"),
        (("--target", "onnx", "--profile", "x86-cpu"), "--target and --profile"),
    ],
)
def test_sweep_refuses_bad_farm_flags_cleanly(cli, tmp_path, args, message):
    result = cli("sweep", "--model", "efficientvit_b0", "--resolution", "64", "-o", tmp_path / "r.jsonl", *args)
    assert_clean_error(result, 3 if "cannot reach" in message else 2, message)
    assert not (tmp_path / "r.jsonl").exists()
