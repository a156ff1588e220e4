"""The plan table's precision columns come from the plan: a bf16 plan shows its bf16 nodes."""

import json
import re


def test_a_bf16_plan_table_has_a_bf16_column(cli, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    args = ("plan", "efficientvit_b0", "-p", "bf16", "--height", "64", "--width", "64", "--calib-count", "4")
    shown = cli(*args)
    assert shown.exit_code == 0, shown.output
    header = next(line for line in shown.stdout.splitlines() if line.split()[:1] == ["block"])
    assert re.search(r"\bfp32\b.*\bbf16\b.*why FP32", header), header
    plan = json.loads(cli(*args, "--json").stdout)
    assert set(plan["summary"]["nodes"]) == {"fp32", "bf16"}
    start, end = re.search(r"\bbf16\b", header).span()
    lines = {line.split()[0]: line for line in shown.stdout.splitlines() if line.split()}
    counted = [g for g in plan["groups"] if g["counts"].get("bf16")]
    assert counted
    for group in counted:  # each block's bf16 node count, under the bf16 header
        assert lines[group["group"]][start:end].strip() == str(group["counts"]["bf16"]), (header, lines[group["group"]])
