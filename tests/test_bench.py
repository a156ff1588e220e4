import time

from evitdeploy.bench import host_info, measure, summarize


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
