"""How often does the latency gate cry wolf, and how often does it catch a real slowdown?

    .venv/bin/python benchmarks/gate_noise.py [--trials 2000] [--host-repeats 10] [--count 100] [--skip-host] [--tiny]

1. Simulation (seeded): baseline and new samples drawn from log-normal jitter of a given relative
   size plus 5% stragglers 30-100% slower; the share of trials the gate flags as a regression, for
   several noise levels, true slowdowns and sample counts (5% threshold, alpha 0.01).
2. This host, real ONNX Runtime sessions (efficientvit_b0 at 224, 2 threads):
   - A/A: the same model against itself, `--host-repeats` times, timed one after the other
     (as two `bench --save` runs would be) and interleaved (as `gate --interleave` does): every
     "regression" verdict here is a false alarm.
   - A/A with a neighbour: a busy-loop process (another job on the runner) starts after the
     baseline was timed and runs until the end: sequential timing blames the model for it,
     interleaved timing sees it on both sides.
   - A/B: our export vs the naive export of the same weights (textbook LiteMLA, no graph
     preparation): a real slowdown the gate should flag every time; its size is measured here.
--tiny: 20 trials, B0 at 64x64, 1 repeat of 5 samples (a smoke run of both parts).
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from evitdeploy.gate import GateSettings, compare_samples, simulated_latencies

from common import add_tiny_flag, naive_export

SETTINGS = GateSettings(threshold=0.05, alpha=0.01)


def simulation(trials: int) -> None:
    print(f"## Simulation: share of {trials} seeded trials flagged as a regression (threshold 5%, alpha 0.01)")
    slowdowns = (1.0, 1.03, 1.05, 1.10, 1.20)
    print(f"{'noise':>6} {'n':>5} " + " ".join(f"{f'+{100 * (s - 1):.0f}%':>8}" for s in slowdowns))
    started = time.perf_counter()
    for noise in (0.03, 0.05, 0.10):
        for n in (30, 50, 100):
            rates = []
            for slowdown in slowdowns:
                rng = np.random.default_rng(0)
                flagged = sum(
                    compare_samples(simulated_latencies(rng, n, 10.0, noise), simulated_latencies(rng, n, 10.0 * slowdown, noise), SETTINGS, interval=False)[
                        "verdict"
                    ]
                    == "regression"
                    for _ in range(trials)
                )
                rates.append(flagged / trials)
            print(f"{100 * noise:>5.0f}% {n:>5} " + " ".join(f"{100 * r:>7.1f}%" for r in rates))
    print(f"(+0% column = false-alarm rate; the others = detection rate; {time.perf_counter() - started:.1f} s)\n")


@contextlib.contextmanager
def neighbour():
    """Another job on the machine: one process spinning on a core."""
    process = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.2)
        yield
    finally:
        process.kill()
        process.wait()


def host(repeats: int, count: int, threads: int, size: int = 224) -> None:
    from evitdeploy.bench import measure, measure_interleaved
    from evitdeploy.data import load_inputs
    from evitdeploy.backends.options import ExportOptions
    from evitdeploy.backends import export
    from evitdeploy.models import build_model, get_spec
    from evitdeploy.backends.onnxruntime.runner import OnnxRuntimeRunner

    spec = get_spec("efficientvit_b0").with_input(1, size, size)
    workdir = Path(tempfile.mkdtemp(prefix="gate-noise-"))
    try:
        model, spec = build_model(spec, None, 0, None)
        inputs, source = load_inputs(spec, spec.height, spec.width, None, count=2)
        ours = export(model, spec, "onnx", ExportOptions(output=workdir / "ours", validation_inputs=inputs, validation_source=source)).model_file
        naive = workdir / "naive.onnx"
        naive_export(model, spec, naive)
        feed = {spec.input_name: inputs[:1]}

        def verdicts(path_a: Path, path_b: Path, interleaved: bool, load: bool) -> list[dict]:
            reports = []
            settings = dict(threads=threads, spinning=not interleaved, pin_threads=interleaved)
            with OnnxRuntimeRunner(path_a, **settings) as a, OnnxRuntimeRunner(path_b, **settings) as b:
                for _ in range(repeats):
                    if interleaved:
                        with neighbour() if load else contextlib.nullcontext():
                            base, new = measure_interleaved(lambda: a.infer(feed), lambda: b.infer(feed), 10, count)
                    else:
                        base = measure(lambda: a.infer(feed), 10, count)
                        with neighbour() if load else contextlib.nullcontext():
                            new = measure(lambda: b.infer(feed), 10, count)
                    reports.append(compare_samples(np.array(base), np.array(new), SETTINGS, interval=False))
            return reports

        print(f"## This host: efficientvit_b0 {size}x{size}, {threads} threads, {count} samples per side, {repeats} repeats")
        print(f"{'comparison':<34} {'mode':<12} {'flagged':>8} {'median ratio (min..max)':>26}")
        comparisons = (
            ("A/A (same model)", ours, ours, False),
            ("A/A, neighbour starts after base", ours, ours, True),
            ("A/B (ours -> naive export)", ours, naive, False),
        )
        for name, path_a, path_b, load in comparisons:
            for interleaved in (False, True):
                reports = verdicts(path_a, path_b, interleaved, load)
                ratios = [r["ratio"] for r in reports]
                flagged = sum(r["verdict"] == "regression" for r in reports)
                mode = "interleaved" if interleaved else "sequential"
                print(f"{name:<34} {mode:<12} {flagged:>4}/{len(reports):<3} {np.median(ratios):>10.3f} ({min(ratios):.3f}..{max(ratios):.3f})")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=2000)
    parser.add_argument("--host-repeats", type=int, default=10)
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-host", action="store_true")
    add_tiny_flag(parser)
    args = parser.parse_args()
    if args.tiny:
        args.trials, args.host_repeats, args.count = 20, 1, 5
    simulation(args.trials)
    if not args.skip_host:
        host(args.host_repeats, args.count, args.threads, 64 if args.tiny else 224)


if __name__ == "__main__":
    main()
