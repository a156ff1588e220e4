"""`evitdeploy sweep` on a 2-node Ray farm against the local executor, measured in one run on this host.

The farm: two Ray nodes on 127.0.0.1 (`ray.cluster_utils.Cluster`; needs the farm extra).

    .venv/bin/python benchmarks/farm_cpu.py [--models efficientvit_b0,efficientvit_b1] [--resolution 224]
        [--farm-first] [--skip-latency] [--latency-count 100] [--json results.json] [--tiny]

The nodes: head = profile x86-cpu, second = profile intel-cpu, 1 CPU each, both advertising every
backend installed here. The cells carry no profile, so a cell's export + check runs on either node
and its bench on either node, holding that node alone.

1. throughput: the grid models x {onnx, tflite, openvino} INT8 at --resolution (samples 2, warmup 5,
   count 30, 1 thread), swept with the local executor and with the farm, one after the other (local
   first unless --farm-first), each into a fresh results file. Printed: each wall clock (run_sweep
   called -> returned; the farm's includes joining the cluster, not starting it), the ratio
   local/farm, and the stage seconds summed over cells (export/check/bench: the same work both ways).
   Scheduling overhead, per stage task (export + check, or bench): the time between the moment the
   task could have started on the node that ran it and the moment it did, i.e.
       start - max(ready, end of the previous task on that node)
   where ready = the moment the executor was handed the cells (exports) or the cell's export end
   (benches), and the first task on a node counts from the hand-over. It is the node's idle time
   while that task was waiting: result return, the artifact's copy to the driver, the bench's
   submission, Ray's scheduling, moving the artifact, a worker's start and imports. Queueing behind
   other work is not in it. The local executor's figure (same definition, one "node") is printed
   beside it. Also: the cell hand-off (bench start - export end, which does include queueing) and the
   nodes' busy share of the farm's wall clock.
2. latency: one bench cell (the first model's ONNX INT8, --latency-count samples, 1 thread) on the
   farm while the grid's heaviest other export runs on the other node, and on the farm with nothing
   beside it, against the same model file benched alone in this process before and after (same
   warmup, count and threads), with the gate's statistics (`gate.compare_samples`: Mann-Whitney U on raw samples,
   the gate's threshold and alpha); alone-after vs alone-before is the noise control. The overlap of
   the bench with the other node's export is read from the recorded timelines.

What this host can and cannot show: both nodes share its CPUs, so an export "on the other node"
competes with the bench here (on a real farm the nodes are separate machines, and the farm only
promises that nothing else runs on the bench's own node: compare "farm, nothing beside" with
"alone"). Ray runs a num_cpus=1 task with OMP_NUM_THREADS=1, so each farm export uses one PyTorch
thread where the local sweep uses all of them. Keeping exports off the bench node altogether is not
expressible: an export and a bench ask for the same kinds of resource (the node, the backend).
The CPU flags and the load average are printed first and saved with the results.
--tiny: B0 at 64x64, 3 timed runs per bench (a smoke run of both sections; it still starts the cluster).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # before ray is imported: the cluster binds 127.0.0.1 only
# The nodes started here and the driver must agree on token auth (a node that sends no token to a
# driver that wants one cannot hand it objects); a loopback-only cluster of this machine needs none.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import numpy as np

from evitdeploy import api, gate
from evitdeploy.bench import host_info
from evitdeploy.device.runtimes import native_stderr_silenced
from evitdeploy.requests import BenchRequest
from evitdeploy.sweep import OK, Cell, CellSettings, make_executor, plan_cells, run_sweep
from evitdeploy.sweep.farm.resources import advertised, installed_backends

from common import add_tiny_flag, cpu_facts, host_line, require

TARGETS = ["onnx", "tflite", "openvino"]
NODES = ("x86-cpu", "intel-cpu")  # the head's profile, the second node's
OBJECT_STORE_BYTES = 300 * 2**20
GRID_SETTINGS = CellSettings(samples=2, warmup=5, count=30, threads=1)


class TimedExecutor:
    """An executor as run_sweep sees it, noting when the cells were handed over (after joining)."""

    def __init__(self, inner):
        self.inner, self.name, self.marks = inner, inner.name, {}

    def prepare(self, cells, profiles) -> None:
        started = time.time()
        self.inner.prepare(cells, profiles)
        self.marks["prepare_s"] = time.time() - started

    def run(self, cells, **kwargs) -> None:
        self.marks["handed_over"] = time.time()
        self.inner.run(cells, **kwargs)

    def close(self) -> None:
        self.inner.close()


def start_farm():
    """Two nodes on this machine, one CPU each, every installed backend on both."""
    from ray.cluster_utils import Cluster

    backends = installed_backends()
    head, second = NODES
    farm = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 1,
            "resources": advertised([head], backends),
            "include_dashboard": False,
            "object_store_memory": OBJECT_STORE_BYTES,
        },
    )
    farm.add_node(num_cpus=1, resources=advertised([second], backends), object_store_memory=OBJECT_STORE_BYTES)
    farm.wait_for_nodes()
    return farm


def sweep(cells, folder: Path, settings: CellSettings, kind: str, address=None) -> dict:
    executor = TimedExecutor(make_executor(kind, address))
    started = time.time()

    def progress(line: str) -> None:
        if line.startswith("["):  # "[i/n] cell: outcome"
            print(f"    {kind:5s} {time.time() - started:6.1f} s {line}", flush=True)

    with native_stderr_silenced():  # the converters' logs and progress bars (a cell's failure is in its record)
        summary = run_sweep(cells, folder / "results.jsonl", artifacts=folder / "artifacts", settings=settings, executor=executor, progress=progress)
    ended = time.time()
    return {"records": summary["cells"], "started": started, "ended": ended, "wall_s": ended - started, **executor.marks}


def stage_intervals(records: list[dict]) -> list[dict]:
    """Every stage task that ran: its cell, stage, node, [start, end]."""
    found = []
    for record in records:
        for stage in ("export", "bench"):
            if stage in record.get("timeline", {}):
                where = record["nodes"].get(stage, {})
                start, end = record["timeline"][stage]
                found.append({"cell": record["cell"], "stage": stage, "node": where.get("node_id") or where.get("host"), "start": start, "end": end})
    return found


def overhead(run: dict) -> dict:
    """Per stage task: start - max(ready, end of the previous task on its node) (see the docstring)."""
    tasks = stage_intervals(run["records"])
    handed_over = run["handed_over"]
    export_end = {json.dumps(t["cell"], sort_keys=True): t["end"] for t in tasks if t["stage"] == "export"}
    delays, busy = [], {}
    for node in {t["node"] for t in tasks}:
        free = handed_over
        for task in sorted((t for t in tasks if t["node"] == node), key=lambda t: t["start"]):
            ready = handed_over if task["stage"] == "export" else export_end[json.dumps(task["cell"], sort_keys=True)]
            delays.append(task["start"] - max(ready, free))
            free = task["end"]
            busy[node] = busy.get(node, 0.0) + task["end"] - task["start"]
    handoffs = [r["timeline"]["bench"][0] - r["timeline"]["export"][1] for r in run["records"] if "bench" in r.get("timeline", {})]
    last_end = max((t["end"] for t in tasks), default=handed_over)
    return {
        "tasks": len(delays),
        "dispatch_mean_s": statistics.fmean(delays) if delays else None,
        "dispatch_median_s": statistics.median(delays) if delays else None,
        "dispatch_max_s": max(delays) if delays else None,
        "dispatch_total_s": sum(delays),
        "handoff_mean_s": statistics.fmean(handoffs) if handoffs else None,
        "before_handover_s": handed_over - run["started"],
        "after_last_stage_s": run["ended"] - last_end,
        "busy_share": {str(node)[:8]: seconds / run["wall_s"] for node, seconds in busy.items()},
    }


def stage_sums(records: list[dict]) -> dict:
    """Seconds summed over cells: each stage as recorded (a cell that failed in a stage records none for
    it), and the export + check span of the timeline, which every cell that exported has."""
    sums = {stage: round(sum(r["seconds"].get(stage, 0.0) for r in records), 1) for stage in ("export", "check", "bench")}
    sums["export_check_span"] = round(sum(r["timeline"]["export"][1] - r["timeline"]["export"][0] for r in records if "export" in r.get("timeline", {})), 1)
    return sums


def throughput(args, farm, scratch: Path) -> tuple[dict, list[dict]]:
    """The grid swept both ways; the figures, and the local sweep's records (the latency section's artifact)."""
    models = args.models.split(",")
    cells = plan_cells(models, TARGETS, ["int8"], [args.resolution], samples=GRID_SETTINGS.samples)
    print(f"\n## 1. {len(cells)} cells ({', '.join(models)} x {', '.join(TARGETS)} INT8 @ {args.resolution}), local vs farm", flush=True)
    runs = {}
    for kind in ("ray", "local") if args.farm_first else ("local", "ray"):
        print(f"  {kind}:", flush=True)
        runs[kind] = sweep(cells, scratch / f"grid-{kind}", GRID_SETTINGS, kind, farm.address if kind == "ray" else None)
    results = {}
    for kind, run in runs.items():
        statuses = [r["status"] for r in run["records"]]
        results[kind] = {
            "wall_s": run["wall_s"],
            "prepare_s": run.get("prepare_s"),
            "stage_seconds": stage_sums(run["records"]),
            "statuses": {s: statuses.count(s) for s in set(statuses)},
            "overhead": overhead(run),
            "cells": [
                {
                    "cell": r["cell"]["model"] + "-" + r["cell"]["target"],
                    "status": r["status"],
                    "seconds": r["seconds"],
                    "timeline": r.get("timeline"),
                    "nodes": {k: {"host": v.get("host"), "node_id": v.get("node_id"), "profiles": v.get("profiles")} for k, v in r.get("nodes", {}).items()},
                    **({"error": r["error"]} if r.get("error") else {}),
                }
                for r in run["records"]
            ],
        }
    results["local_over_farm"] = runs["local"]["wall_s"] / runs["ray"]["wall_s"]
    return results, runs["local"]["records"]


def bench_alone(artifact: Path, settings: CellSettings) -> tuple[list[float], str]:
    summary = api.bench_artifact(BenchRequest(path=artifact, threads=settings.threads, warmup=settings.warmup, count=settings.count))
    return summary["results"][0]["latency_samples_ms"], summary["artifact_sha256"]


def overlap_s(interval: list[float], others: list[list[float]]) -> float:
    return sum(max(0.0, min(interval[1], b) - max(interval[0], a)) for a, b in others)


def latency(args, farm, scratch: Path, local_records: list[dict]) -> dict:
    """The first model's ONNX INT8 benched in this process alone, on the farm beside the grid's heaviest
    other export, on the farm with nothing beside it, and alone again."""
    settings = CellSettings(samples=2, warmup=GRID_SETTINGS.warmup, count=args.latency_count, threads=1)
    model = args.models.split(",")[0]
    bench_cell = plan_cells([model], ["onnx"], ["int8"], [args.resolution], samples=settings.samples)
    local = next(r for r in local_records if Cell.from_dict(r["cell"]) == bench_cell[0])
    if local["status"] != OK:
        raise SystemExit(f"{bench_cell[0].name} did not pass in the local sweep: {local.get('error')}")
    others = [r for r in local_records if r is not local and "export" in r.get("timeline", {})]
    heaviest = Cell.from_dict(max(others, key=lambda r: r["timeline"]["export"][1] - r["timeline"]["export"][0])["cell"])
    print(
        f"\n## 2. bench latency of {bench_cell[0].name} ({settings.count} samples, {settings.threads} thread): alone here vs "
        f"on the farm beside the export of {heaviest.name}, and with nothing beside it",
        flush=True,
    )
    samples, sha256, runs = {}, {}, {}
    samples["alone_before"], sha256["alone"] = bench_alone(Path(local["artifact"]), settings)
    print(f"    alone (before): median {np.median(samples['alone_before']):.3f} ms", flush=True)
    for case, cells in (("farm_beside_export", bench_cell + [heaviest]), ("farm_alone", bench_cell)):
        runs[case] = sweep(cells, scratch / f"latency-{case}", settings, "ray", farm.address)
        record = runs[case]["records"][0]
        if record["status"] != OK:
            raise SystemExit(f"the farm's {bench_cell[0].name} did not pass: {record['status']} {record.get('error')}")
        samples[case], sha256[case] = record["bench"]["results"][0]["latency_samples_ms"], record["bench"]["artifact_sha256"]
        print(f"    {case}: median {np.median(samples[case]):.3f} ms", flush=True)
    samples["alone_after"], _ = bench_alone(Path(local["artifact"]), settings)
    print(f"    alone (after):  median {np.median(samples['alone_after']):.3f} ms", flush=True)
    record, other = runs["farm_beside_export"]["records"]
    bench_span = record["timeline"]["bench"]
    apart = other["nodes"].get("export", {}).get("node_id") != record["nodes"]["bench"].get("node_id")
    alone = samples["alone_before"] + samples["alone_after"]
    return {
        "cell": bench_cell[0].name,
        "beside": heaviest.name,
        "same_model_file": len(set(sha256.values())) == 1,
        "bench_node": record["nodes"]["bench"].get("profiles"),
        "export_beside_node": other["nodes"].get("export", {}).get("profiles"),
        "bench_s": bench_span[1] - bench_span[0],
        "overlap_s": overlap_s(bench_span, [other["timeline"]["export"]]) if apart else 0.0,
        "median_ms": {case: float(np.median(values)) for case, values in samples.items()},
        "farm_beside_vs_alone": gate.compare_samples(alone, samples["farm_beside_export"], interval=False),
        "farm_alone_vs_alone": gate.compare_samples(alone, samples["farm_alone"], interval=False),
        "farm_beside_vs_farm_alone": gate.compare_samples(samples["farm_alone"], samples["farm_beside_export"], interval=False),
        "after_vs_before": gate.compare_samples(samples["alone_before"], samples["alone_after"], interval=False),
        "samples_ms": samples,
    }


def render(results: dict) -> None:
    grid = results.get("throughput")
    if grid:
        print("\n## results")
        print(f"{'':24s} {'local':>10s} {'farm (2 nodes)':>15s}")
        local, farm = grid["local"], grid["ray"]
        print(f"{'wall clock':24s} {local['wall_s']:9.1f}s {farm['wall_s']:14.1f}s   local/farm {grid['local_over_farm']:.2f}x")
        for stage, label in (
            ("export", "sum of export seconds"),
            ("check", "sum of check seconds"),
            ("bench", "sum of bench seconds"),
            ("export_check_span", "sum of export+check spans"),
        ):
            print(f"{label:24s} {local['stage_seconds'][stage]:9.1f}s {farm['stage_seconds'][stage]:14.1f}s")
        print(f"{'cell statuses':24s} {json.dumps(local['statuses']):>10s} {json.dumps(farm['statuses']):>15s}")
        lo, fo = local["overhead"], farm["overhead"]
        print(
            f"{'dispatch/task mean':24s} {lo['dispatch_mean_s']:9.2f}s {fo['dispatch_mean_s']:14.2f}s   (median {lo['dispatch_median_s']:.2f} / {fo['dispatch_median_s']:.2f} s, "
            f"max {lo['dispatch_max_s']:.2f} / {fo['dispatch_max_s']:.2f} s, over {lo['tasks']} / {fo['tasks']} stage tasks)"
        )
        print(f"{'dispatch total':24s} {lo['dispatch_total_s']:9.1f}s {fo['dispatch_total_s']:14.1f}s")
        print(f"{'hand-off/cell mean':24s} {lo['handoff_mean_s']:9.2f}s {fo['handoff_mean_s']:14.2f}s   (bench start - export end, queueing included)")
        print(
            f"{'joining / after last stage':24s} {lo['before_handover_s']:4.1f}s/{lo['after_last_stage_s']:3.1f}s {fo['before_handover_s']:9.1f}s/{fo['after_last_stage_s']:3.1f}s"
        )
        print(
            f"{'nodes busy (of wall)':24s} {' '.join(f'{v:.0%}' for v in lo['busy_share'].values()):>10s} {' '.join(f'{v:.0%}' for v in fo['busy_share'].values()):>15s}"
        )
    lat = results.get("latency")
    if lat:
        m = lat["median_ms"]
        print(f"\nbench {lat['cell']} ({len(lat['samples_ms']['farm_alone'])} samples each; same model file everywhere: {lat['same_model_file']})")
        print(
            f"  alone here {m['alone_before']:.3f} ms before / {m['alone_after']:.3f} ms after; on the farm {m['farm_alone']:.3f} ms with nothing beside it, "
            f"{m['farm_beside_export']:.3f} ms on node {','.join(lat['bench_node'] or [])} beside the export of {lat['beside']} on node "
            f"{','.join(lat['export_beside_node'] or [])} ({lat['overlap_s']:.2f} s of the bench's {lat['bench_s']:.2f} s overlapped it)"
        )
        for key, label in (
            ("farm_beside_vs_alone", "farm beside export vs alone here (before+after)"),
            ("farm_alone_vs_alone", "farm, nothing beside vs alone here"),
            ("farm_beside_vs_farm_alone", "farm beside export vs farm, nothing beside"),
            ("after_vs_before", "control: alone after vs before"),
        ):
            verdict = lat[key]
            print(f"  {label:48s} {verdict['verdict']:12s} ratio {verdict['ratio']:.3f}  p_slower {verdict['p_slower']:.2g}  ({verdict['reason']})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="efficientvit_b0,efficientvit_b1", help="e.g. efficientvit_b0,efficientvit_b1,efficientvit_b2,efficientvit_b3")
    parser.add_argument("--resolution", default="224")
    parser.add_argument("--farm-first", action="store_true", help="sweep with the farm before the local executor")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--latency-count", type=int, default=100, help="samples of each latency bench (100 at B0: ~0.3 s of the export beside it)")
    parser.add_argument("--json", type=Path, help="write every figure, the host and its CPU flags here")
    add_tiny_flag(parser)
    args = parser.parse_args()
    require(("ray",), "the farm extra: pip install -e '.[farm]'", args.tiny)
    if args.tiny:
        global GRID_SETTINGS
        args.models, args.resolution, args.latency_count = "efficientvit_b0", "64", 3
        GRID_SETTINGS = replace(GRID_SETTINGS, warmup=1, count=3)
    started = time.perf_counter()
    facts = cpu_facts(GRID_SETTINGS.threads)
    print(f"{host_line(facts)}; backends {', '.join(installed_backends())}", flush=True)
    results = {
        "host": facts,
        "models": args.models,
        "resolution": args.resolution,
        "farm_first": args.farm_first,
        "nodes": [{"profile": profile, "num_cpus": 1} for profile in NODES],
    }
    farm_started = time.perf_counter()
    farm = start_farm()
    results["farm_start_s"] = time.perf_counter() - farm_started
    print(f"farm: 2 nodes on {farm.address} ({', '.join(NODES)}; 1 CPU each), started in {results['farm_start_s']:.1f} s", flush=True)
    try:
        with tempfile.TemporaryDirectory(prefix="evitdeploy-farmbench-") as scratch:
            results["throughput"], local_records = throughput(args, farm, Path(scratch))
            if not args.skip_latency:
                results["latency"] = latency(args, farm, Path(scratch), local_records)
    finally:
        farm.shutdown()
    results["wall_s"] = time.perf_counter() - started
    results["load_average_1m_end"] = host_info(None)["load_average_1m"]
    render(results)
    print(f"total {results['wall_s'] / 60:.1f} min; load average {facts['load_average_1m']:.1f} at start, {results['load_average_1m_end']:.1f} at end")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
