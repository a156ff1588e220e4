"""Property-based fuzzing of every verb, the proof that untrusted input is refused cleanly everywhere:
generated argument lists and damaged manifests, bundles and result files. For every example:

- the exit code is 0, 1, 2 or 3 and no exception escapes (no traceback);
- a refusal (exit 2 or 3) is exactly one `error:` line, and with --json also the error as JSON on stdout;
- a refusal leaves nothing new on disk (the example's folder is compared before and after);
- no example runs past its time limit (an unbounded --count must be refused, not run).

Heavy verbs (export, plan, deploy, sweep) get at least one invalid value per example, so they are
fuzzed on their validation paths and never run a long export. Damage comes from
`tests/fuzz/mutators.py`, re-hashed so that it passes the sha256 check and reaches the parsers.

Knobs: EVITDEPLOY_FUZZ_SCALE=10 runs ten times the examples; EVITDEPLOY_FUZZ_RANDOM=1 explores
new examples instead of the fixed (derandomized) set; EVITDEPLOY_FUZZ_SURVEY=FILE records every
violation to FILE (JSON lines) instead of failing, to list all failure classes in one run.
The examples run per verb are printed by the last test and written to fuzz-counts.json in the
pytest base temp folder.
"""

from __future__ import annotations

import collections
import json
from typing import Optional
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from evitdeploy.cli import app
from fuzz.mutators import (
    LONG,
    MARKUP,
    copy_folder,
    dumps,
    folder_mutation,
    json_mutation,
    json_text_mutation,
)

SCALE = float(os.environ.get("EVITDEPLOY_FUZZ_SCALE", "1"))
SURVEY = os.environ.get("EVITDEPLOY_FUZZ_SURVEY")
COUNTS: collections.Counter = collections.Counter()
SECONDS: collections.Counter = collections.Counter()
B0 = "efficientvit_b0"


def fuzz_settings(examples: int):
    return settings(
        max_examples=max(1, int(examples * SCALE)),
        deadline=None,
        database=None,  # no .hypothesis/ folder anywhere (and reruns stay the same)
        derandomize=not os.environ.get("EVITDEPLOY_FUZZ_RANDOM"),
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )


# ---- running one example and judging it ----


class FuzzTimeout(BaseException):
    """Raised in the command by SIGALRM: a BaseException, so no `except Exception` swallows it."""


def _alarm(signum, frame):
    raise FuzzTimeout()


def tree(root: Path) -> set[str]:
    found = set()
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            found.add(os.path.relpath(os.path.join(dirpath, name), root))
    return found


def _where(exc_info) -> str:
    """The deepest evitdeploy frame of a traceback (file:line function), else the deepest frame."""
    frames = traceback.extract_tb(exc_info[2]) if exc_info and exc_info[2] else []
    ours = [f for f in frames if "/evitdeploy/" in f.filename] or frames
    if not ours:
        return "?"
    frame = ours[-1]
    return f"{frame.filename.split('/evitdeploy/')[-1]}:{frame.lineno} {frame.name}"


def violation(verb: str, kind: str, detail: str, args, context) -> Optional[str]:
    """The broken invariant as text for the test's assert (None in survey mode: recorded instead)."""
    record = {"verb": verb, "kind": kind, "detail": detail[:500], "args": [str(a) for a in args], "context": context}
    if SURVEY:
        with open(SURVEY, "a") as handle:
            handle.write(json.dumps(record) + "\n")
        return None
    return json.dumps(record, indent=1)


def run_cli(verb: str, args: list[str], sandbox: Path, context=None, limit: float = 30.0) -> Optional[str]:
    """Run `evitdeploy ARGS` in the sandbox folder and check every invariant: the first one
    broken, as text, or None."""
    args = [str(a) for a in args]
    before = tree(sandbox)
    specials = special_kinds(sandbox)
    cwd = os.getcwd()
    os.chdir(sandbox)
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, limit)
    started = time.perf_counter()
    result = None
    try:
        result = CliRunner().invoke(app, args)
    except FuzzTimeout:
        pass
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        os.chdir(cwd)
        COUNTS[verb] += 1
        SECONDS[verb] += time.perf_counter() - started
    if os.environ.get("EVITDEPLOY_FUZZ_LOG") and result is not None:
        with open(os.environ["EVITDEPLOY_FUZZ_LOG"], "a") as handle:
            last = (result.stderr.strip().splitlines() or [""])[-1]
            handle.write(
                json.dumps(
                    {"verb": verb, "args": args, "exit": result.exit_code, "exception": repr(result.exception), "last": last[:200], "context": context},
                    default=str,
                )
                + "\n"
            )
    if result is None:
        return violation(verb, "timeout", f"still running after {limit:.0f} s", args, context)
    changed = sorted(name for name, kind in specials.items() if special_kinds(sandbox).get(name) != kind)
    if changed:  # a FIFO, a device or a symlink replaced (or removed): the rename-over-/dev/null defect
        return violation(verb, "special file replaced", ", ".join(changed), args, context)
    exc = result.exception
    if exc is not None and not isinstance(exc, SystemExit):
        return violation(verb, f"exception {type(exc).__name__}", f"{_where(result.exc_info)}: {exc}"[:500], args, context)
    code = result.exit_code
    text = result.stdout + result.stderr
    if code not in (0, 1, 2, 3):
        return violation(verb, f"exit {code}", text[-300:], args, context)
    if "Traceback" in text:
        return violation(verb, "traceback printed", text[-300:], args, context)
    if code in (2, 3):
        errors = [line for line in text.splitlines() if line.startswith("error:")]
        if len(errors) != 1:
            return violation(verb, f"{len(errors)} error lines", result.stderr[-400:], args, context)
        new = sorted(tree(sandbox) - before)
        if new:
            return violation(verb, "left files behind", ", ".join(new[:5]), args, context)
        if json_flag(args):
            try:
                document = json.loads(result.stdout)
                assert isinstance(document, dict) and document.get("exit_code") == code and "error" in document
            except (ValueError, AssertionError):
                return violation(verb, "no JSON error under --json", result.stdout[-200:], args, context)
    return None


def json_flag(args: list[str]) -> bool:
    """Whether --json is the flag here (not after `--`, not the value of an option before it)."""
    import typer.main

    takes_value = {
        o
        for command in typer.main.get_command(app).commands.values()
        for p in command.params
        if p.param_type_name == "option" and not p.is_flag
        for o in p.opts
    }
    args = args[: args.index("--")] if "--" in args else args
    return any(a == "--json" and (i == 0 or args[i - 1] not in takes_value) for i, a in enumerate(args))


def _identity(path: str) -> tuple:
    found = os.lstat(path)
    return (stat.S_IFMT(found.st_mode), found.st_rdev, found.st_ino)


@pytest.fixture(scope="module", autouse=True)
def machine_left_whole(tmp_path_factory):
    """Around the whole fuzz pool: /dev/null and /dev/zero are still the same character devices,
    and files beside the examples' folders (not named by any example) are untouched, as are
    their mode and content: no command may replace, truncate or remove what the user did not name."""
    siblings = tmp_path_factory.mktemp("fuzz-siblings")
    (siblings / "kept.txt").write_text("beside the sandboxes\n")
    (siblings / "folder").mkdir()
    (siblings / "folder" / "inner.json").write_text("{}\n")
    os.mkfifo(siblings / "fifo")
    devices = {path: _identity(path) for path in ("/dev/null", "/dev/zero")}
    before = {p: (_identity(p), Path(p).read_bytes() if os.path.isfile(p) else None) for p in map(str, sorted(siblings.rglob("*")))}
    yield
    for path, identity in devices.items():
        assert stat.S_ISCHR(os.lstat(path).st_mode) and _identity(path) == identity, f"{path} was replaced during the fuzz run"
    after = {p: (_identity(p), Path(p).read_bytes() if os.path.isfile(p) else None) for p in map(str, sorted(siblings.rglob("*")))}
    assert after == before, "files beside the fuzz examples changed"


@pytest.fixture
def sandboxes(tmp_path_factory):
    """Fresh empty folders, one per example (a hypothesis test runs many examples per call)."""
    base = tmp_path_factory.mktemp("fuzz")
    made = []

    def make() -> Path:
        path = Path(tempfile.mkdtemp(dir=base))
        made.append(path)
        return path

    yield make
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def made(b0_64_artifact, b0_64_bundle, tmp_path_factory):
    """The originals every example copies: a B0 artifact and an x86-cpu bundle, both 64x64 (shared
    with the other tests; examples work on copies), and a photo for `predict`."""
    from PIL import Image
    from skimage import data

    artifact, bundle = b0_64_artifact, b0_64_bundle
    profile = Path(__file__).parents[1] / "evitdeploy" / "profiles" / "x86-cpu.toml"
    photo = tmp_path_factory.mktemp("fuzz-photo") / "photo.png"
    Image.fromarray(data.coffee()[::4, ::4]).save(photo)  # 150x100
    return {"artifact": artifact, "bundle": bundle, "check": bundle / "check.json", "bench": bundle / "bench.json", "profile": profile, "photo": photo}


# ---- argument lists ----

# Values that are wrong for an option of this kind; click or our validation must refuse them.
BAD_INT = ["abc", "", "1.5", "18446744073709551616", "-18446744073709551616", "0x10", "1e3", "\n"]
BAD_FLOAT = ["abc", "", "nan", "inf", "-inf", "1e400", "--"]
BAD_SIZE = [
    *BAD_INT,
    "0",
    "-32",
    "100",
    "31",
    "4194304",
    "16777216",
]  # huge sizes the memory estimate refuses at once (64x99968 or 64x1048576 fit: they run, slowly)
BAD_COUNT = [*BAD_INT, "-1", "-5", "1000000000000000000000"]
WEIRD_TEXT = [*MARKUP, "a\nb", LONG[0], "", " ", "-", "é中文"]
BAD_BY_OPTION = {
    "--model": ["efficientvit_b9", "", "[/]", "a\nb", LONG[0], "EFFICIENTVIT_B0", "efficientvit_b0,efficientvit_b0"],
    "--target": ["onxx", "", "[/]", "a\nb", "tf"],
    "--precision": ["fp8", "bf16", "", "[bold]", "FP32 ", "int4"],
    "--height": BAD_SIZE,
    "--width": BAD_SIZE,
    "--batch": [*BAD_INT, "0", "-1", "1048576"],
    "--dynamic": ["hieght", "batchx", "depth", ",", "[/]", "batch,batch,x"],
    "--opset": [*BAD_INT, "5", "99", "-1"],
    "--seed": ["18446744073709551616", "-18446744073709551617", "abc", "1e3"],
    "--attention-eps": [*BAD_FLOAT, "-1"],
    "--calib": ["nope", "[/]", "a\nb", LONG[0], "junk.npz", "zero.npz", "nan.npz", "fifo", "dir"],
    "--calib-count": [*BAD_COUNT, "0"],
    "--calib-method": ["bogus", "", "[/]"],
    "--fp16-margin": [*BAD_FLOAT, "-1", "0"],
    "--min-cosine-target": [*BAD_FLOAT, "2", "-1"],
    "--search-budget": [*BAD_COUNT],
    "--torch-fp16": ["tpu", "", "[/]", "cuda:99"],
    "--profile": ["nope", "", "[/]", "a\nb", LONG[0], "junk.toml", "missing.toml", "dir", "fifo", "zero.json"],
    "--samples": [*BAD_COUNT, "0"],
    "--count": BAD_COUNT,
    "--warmup": BAD_COUNT,
    "--threads": [*BAD_COUNT, "0"],
    "--block": [*BAD_COUNT, "0"],
    "--min-time": [*BAD_FLOAT, "-1", "1e9"],
    "--resolution": ["0", "100", "abc", "64x", "x64", "64x64x64", "", ",", "99968", "[/]"],
    "--threshold": ["abc", "", "-5%", "nan", "1e21%", "5%%", "[/]"],
    "--alpha": [*BAD_FLOAT, "0", "1", "-1", "2"],
    "--columns": ["bogus", ",", "", "[/]", "model,model,bogus"],
    "--workspace": [*BAD_COUNT, "0"],
    "--atol": [*BAD_FLOAT, "-1"],
    "--min-cosine": [*BAD_FLOAT, "2"],
    "--min-top1": [*BAD_FLOAT, "2"],
    "--min-pixel-agreement": [*BAD_FLOAT, "2"],
    "--top": [*BAD_INT, "0", "21", "-1"],
    "--limit": [*BAD_COUNT, "0"],
    "--delegate": ["bogus", "[/]", "a\nb", "COREML", "xnnpack,coreml"],
    "--executor": ["slurm", "", "[/]", "RAY", "a\nb"],
    "--address": ["x y", "", ":", "host:", "[/]", "a\nb", "127.0.0.1:99999999"],
    "--num-cpus": [*BAD_COUNT, "0"],
    "--port": [*BAD_INT, "0", "65536", "-1"],
    "--point": ["abc", "1", "1,2,3,4", "nan,1", "-1,5", "99999,1", "1,1,7", "", ",", "[/]", "a\nb"],
    "--box": ["1,2,3", "5,5,1,1", "0,0,99999,10", "nan,0,1,1", "1,2,3,4,5", "", "[/]"],
}
# Paths a user might mistype or that are hostile; relative to the example's folder.
BAD_PATHS = ["nope", "nope.json", "a\nb", "[/]", LONG[0], "n" * 300 + ".json", "file.txt/out", "dir", "junk.npz", "junk.toml", "-", "/nonexistent/x"]
BAD_PATHS += ["fifo", "zero.json", "null", "zero.npz", "nan.npz", "", "."]  # not plain files (see furnish), empty and NaN data
OUTPUT_PATHS = [
    "out",
    "sub/dir/out",
    "[/]",
    "a\nb",
    "file.txt",
    "file.txt/out",
    "dir",
    LONG[0],
    ".",
    "",
    "fifo",
    "null",
    "/proc/evitdeploy-fuzz",
    "/sys/evitdeploy-fuzz",
]
STRUCTURAL = [("unknown", "--bogus"), ("unknown", "-Z"), ("unknown", "--[/]"), ("unknown", "--json=1")]


def _options(verb: str) -> list:
    import typer.main

    command = typer.main.get_command(app).commands[verb]
    return [p for p in command.params if p.param_type_name == "option" and p.opts[0] != "--help"]


def _long(param) -> str:
    return max(param.opts, key=len) if not any(o.startswith("--") for o in param.opts) else next(o for o in param.opts if o.startswith("--"))


def _type_bad(param) -> list[str]:
    descriptor = getattr(param, "type_descriptor", None)  # Typer >= 0.22; click's param.type before
    text = repr(descriptor.annotation) if descriptor is not None else getattr(getattr(param, "type", None), "name", "")
    if "float" in text:
        return BAD_FLOAT
    if "int" in text:
        return BAD_INT
    if "path" in text.lower():
        return BAD_PATHS
    return WEIRD_TEXT


@st.composite
def bad_mutation(draw, verb: str):
    """One change that makes the command line wrong: an unknown option, an option without its
    value, a value of the wrong type or out of range, a required option dropped."""
    options = [p for p in _options(verb) if not p.is_flag]
    required = [p for p in options if p.required]
    kinds = ["value", "value", "value", "structural", "missing-value"] + (["drop"] if required else [])
    kind = draw(st.sampled_from(kinds if options else ["structural"]))
    if kind == "structural":
        return draw(st.sampled_from(STRUCTURAL))
    if kind == "drop":  # only a required option: dropping an optional one is no mistake
        return ("drop", _long(draw(st.sampled_from(required))))
    param = draw(st.sampled_from(options))
    name = _long(param)
    if kind == "missing-value":
        return ("missing-value", name)
    pool = BAD_BY_OPTION.get(name) or (OUTPUT_PATHS if name in ("--output", "--save", "--markdown") else _type_bad(param))
    return ("set", name, draw(st.sampled_from(pool)))


@st.composite
def any_mutation(draw, verb: str):
    """A bad change, or an unusual but valid one (a flag, --json, an extra argument)."""
    flags = [_long(p) for p in _options(verb) if p.is_flag and _long(p) not in ("--force", "--version")]
    kind = draw(st.sampled_from(["bad", "bad", "json", "flag", "positional"] if flags else ["bad", "bad", "json", "positional"]))
    if kind == "bad":
        return draw(bad_mutation(verb))
    if kind == "json":
        return ("append", "--json")
    if kind == "flag":
        return ("append", draw(st.sampled_from(flags)))
    return ("append", draw(st.sampled_from(["extra", "[/]", "a\nb", "--", "-"])))


def apply(args: list[str], mutation: tuple) -> list[str]:
    args = list(args)
    kind = mutation[0]
    if kind in ("unknown", "append"):
        return args + [mutation[1]]
    if kind == "missing-value":
        return [a for a in args if a != mutation[1]] + [mutation[1]]
    if kind == "drop":
        if mutation[1] in args:
            index = args.index(mutation[1])
            del args[index : index + 2]
        return args
    name, value = mutation[1], mutation[2]
    if name in args and args.index(name) + 1 < len(args):
        args[args.index(name) + 1] = value
        return args
    return args + [name, value]


def _can_mknod() -> bool:
    """Whether this process may make a character device (root, and a container that allows mknod)."""
    with tempfile.TemporaryDirectory() as scratch:
        try:
            os.mknod(os.path.join(scratch, "null"), stat.S_IFCHR | 0o666, os.makedev(1, 3))
        except OSError:
            return False
    return True


AS_ROOT = _can_mknod()  # a character device like /dev/null, made in the sandbox, needs root (mknod)


def furnish(sandbox: Path) -> None:
    """What the bad paths name: a plain file, a folder, junk data, files that are not plain files
    (a FIFO nobody writes, a symlink to /dev/zero, a character device like /dev/null where root
    can make one), image data with zero images and with NaN."""
    import numpy as np

    (sandbox / "file.txt").write_text("not what you think\n")
    (sandbox / "dir").mkdir()
    (sandbox / "junk.npz").write_bytes(b"PK\x03\x04 not a zip")
    (sandbox / "junk.toml").write_text("backend = [\n")
    os.mkfifo(sandbox / "fifo")
    (sandbox / "zero.json").symlink_to("/dev/zero")
    if AS_ROOT:
        os.mknod(sandbox / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    np.savez(sandbox / "zero.npz", x=np.zeros((0, 64, 64, 3), np.uint8))
    np.savez(sandbox / "nan.npz", input=np.full((2, 3, 64, 64), np.nan, np.float32))


def special_kinds(sandbox: Path) -> dict[str, int]:
    """The file type of every entry that is not a plain file or folder (a FIFO, a device, a symlink)."""
    found = {}
    for name in os.listdir(sandbox):
        mode = os.lstat(sandbox / name).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            found[name] = stat.S_IFMT(mode)
    return found


HEAVY_BASE = {
    "export": ["export", "--model", B0, "--height", "64", "--width", "64", "--output", "out"],
    "plan": ["plan", B0, "--precision", "int8", "--height", "64", "--width", "64", "--calib", "synthetic", "--calib-count", "1", "--search-budget", "0"],
    "deploy": ["deploy", "--profile", "x86-cpu", "--model", B0, "--height", "64", "--width", "64", "--samples", "1", "--output", "bundle"],
    "sweep": ["sweep", "--model", B0, "--resolution", "64", "--samples", "1", "--count", "5", "--warmup", "1", "--threads", "1", "--output", "results.jsonl"],
}


@pytest.mark.parametrize("verb,examples", [("export", 60), ("plan", 30), ("deploy", 40), ("sweep", 30)])
def test_heavy_verbs_refuse_bad_arguments_cleanly(verb, examples, sandboxes):
    @fuzz_settings(examples)
    @given(first=bad_mutation(verb), more=st.lists(any_mutation(verb), max_size=2))
    def property(first, more):
        sandbox = sandboxes()
        furnish(sandbox)
        args = HEAVY_BASE[verb]
        for mutation in [*more, first]:  # the bad one last: an option missing its value stays last
            args = apply(args, mutation)
        problem = run_cli(verb, args, sandbox, {"mutations": [first, *more]}, limit=60)
        assert problem is None, problem

    property()


LIGHT_BASE = {
    "check": lambda m: ["check", "art", "--samples", "1"],
    "bench": lambda m: ["bench", "art", "--count", "5", "--warmup", "1", "--threads", "1"],
    "gate": lambda m: ["gate", "new.json", "--baseline", "base.json"],
    "gate --interleave": lambda m: ["gate", "--interleave", "art", "art", "--count", "10", "--warmup", "1", "--threads", "1"],
    "report": lambda m: ["report", "check.json", "bench.json"],
    "verify": lambda m: ["verify", "bundle", "--count", "3", "--warmup", "1"],
    "build": lambda m: ["build", "bundle", "--count", "3"],
    "models": lambda m: ["models"],
    "profiles": lambda m: ["profiles"],
    "doctor": lambda m: ["doctor"],
    "predict": lambda m: ["predict", "art", "photo.png", "--output", "out.png"],
    "eval": lambda m: ["eval", "art", "--dataset", "ds", "--limit", "1"],
    "worker": lambda m: ["worker", "--head", "--dry-run"],  # never starts Ray: --dry-run stays (mutations only append or set)
}


def stage(made, sandbox: Path) -> None:
    """The inputs the light verbs read, copied into the example's folder (hard links: cheap)."""
    furnish(sandbox)
    copy_folder(made["artifact"], sandbox / "art")
    copy_folder(made["bundle"], sandbox / "bundle")
    for name in ("check", "bench"):
        shutil.copyfile(made[name], sandbox / f"{name}.json")
    shutil.copyfile(made["bench"], sandbox / "new.json")
    shutil.copyfile(made["bench"], sandbox / "base.json")
    shutil.copyfile(made["photo"], sandbox / "photo.png")
    (sandbox / "ds" / "c1").mkdir(parents=True)  # an ImageFolder for `eval`: the random B0's 1000 classes named, one photo
    (sandbox / "ds" / "classes.txt").write_text("".join(f"c{i}\n" for i in range(1000)))
    shutil.copyfile(made["photo"], sandbox / "ds" / "c1" / "a.png")


@pytest.mark.parametrize(
    "verb,examples",
    [
        ("check", 30),
        ("bench", 25),
        ("gate", 30),
        ("gate --interleave", 15),
        ("report", 30),
        ("verify", 25),
        ("build", 10),
        ("models", 10),
        ("profiles", 10),
        ("doctor", 5),
        ("predict", 25),
        ("eval", 20),
        ("worker", 20),
    ],
)
def test_light_verbs_on_generated_arguments(verb, examples, made, sandboxes):
    name = verb.split()[0]

    @fuzz_settings(examples)
    @given(mutations=st.lists(any_mutation(name), max_size=3))
    def property(mutations):
        sandbox = sandboxes()
        stage(made, sandbox)
        args = LIGHT_BASE[verb](made)
        for mutation in mutations:
            args = apply(args, mutation)
        problem = run_cli(verb, args, sandbox, {"mutations": mutations}, limit=30)
        assert problem is None, problem

    property()


# ---- every path of every verb, as each kind of file that is not a plain one ----

SPECIAL_PATHS = {
    "fifo": "fifo",  # a FIFO nobody writes: a read or a write that opens it blocks for ever
    "dev-zero": "zero.json",  # a symlink to /dev/zero: a read never ends
    "char-device": "null",  # a character device like /dev/null: an output is written into it, never replaced
    "empty": "",
    "dot": ".",
    "proc": "/proc/evitdeploy-fuzz",
    "zero-images": "zero.npz",
    "nan-data": "nan.npz",
}
# The verbs' path arguments (by position in the base command) and the str options that name files.
POSITIONAL_PATHS = {
    "check": {"artifact": 1},
    "bench": {"artifact": 1},
    "predict": {"artifact": 1, "image": 2},
    "eval": {"artifact": 1},
    "gate": {"paths": 1},
    "report": {"results": 1},
    "verify": {"bundle": 1},
    "build": {"bundle": 1},
}
STR_PATH_OPTIONS = {"plan": ["--calib"], "deploy": ["--profile"], "sweep": ["--profile"]}


def path_slots(verb: str) -> list[str]:
    """Every place `verb` takes a path: its Path options and arguments (from the Typer signature,
    so a new one is covered) and the str options that name a file."""
    import typer.main

    command = typer.main.get_command(app).commands[verb]
    slots = []
    for param in command.params:
        descriptor = getattr(param, "type_descriptor", None)
        text = repr(descriptor.annotation) if descriptor is not None else getattr(getattr(param, "type", None), "name", "")
        if "path" in text.lower():
            slots.append(_long(param) if param.param_type_name == "option" else param.name)
    return slots + STR_PATH_OPTIONS.get(verb, [])


def with_path(args: list[str], verb: str, slot: str, value: str) -> list[str]:
    if slot.startswith("-"):
        return apply(args, ("set", slot, value))
    args = list(args)
    args[POSITIONAL_PATHS[verb][slot]] = value
    return args


PATH_VERBS = ["export", "plan", "deploy", "sweep", "check", "bench", "predict", "eval", "gate", "report", "verify", "build"]


@pytest.mark.parametrize("kind", sorted(SPECIAL_PATHS))
@pytest.mark.parametrize("verb", PATH_VERBS)
def test_every_path_of_every_verb_as_a_special_file(verb, kind, made, sandboxes):
    """Each path slot of the verb in turn names a FIFO, /dev/zero, a character device, '', '.', a
    /proc path, zero images or NaN data: a refusal is one line (exit 2) before any work, nothing
    blocks, and no FIFO, device or symlink is replaced."""
    if kind == "char-device" and not AS_ROOT:
        pytest.skip("a character device is made with mknod, which needs root and a container that allows it")
    base = HEAVY_BASE.get(verb) or LIGHT_BASE[verb](made)
    for slot in path_slots(verb):
        sandbox = sandboxes()
        stage(made, sandbox)
        args = with_path(base, verb, slot, SPECIAL_PATHS[kind])
        problem = run_cli(f"{verb} (special paths)", args, sandbox, {"slot": slot, "kind": kind}, limit=60)
        assert problem is None, problem


# ---- damaged files ----

DAMAGED_FILE_RUNS = {
    "check": (["check", "art", "--samples", "1"], "art"),
    "bench": (["bench", "art", "--count", "3", "--warmup", "1", "--threads", "1"], "art"),
    "gate --interleave": (["gate", "--interleave", "art", "art2", "--count", "10", "--warmup", "1", "--threads", "1"], "art2"),
    "verify": (["verify", "bundle", "--count", "3", "--warmup", "1"], "bundle"),
    "build": (["build", "bundle", "--count", "3"], "bundle"),
    "predict": (["predict", "art", "photo.png", "--output", "out.png"], "art"),
}


@pytest.mark.parametrize("verb,examples", [("check", 40), ("bench", 30), ("gate --interleave", 15), ("verify", 60), ("build", 10), ("predict", 20)])
def test_verbs_on_damaged_artifacts_and_bundles(verb, examples, made, sandboxes):
    args, target = DAMAGED_FILE_RUNS[verb]

    @fuzz_settings(examples)
    @given(data=st.data(), as_json=st.booleans())
    def property(data, as_json):
        sandbox = sandboxes()
        stage(made, sandbox)
        if target == "art2":
            copy_folder(made["artifact"], sandbox / "art2")
        done = data.draw(folder_mutation(sandbox / target, outside=sandbox))
        problem = run_cli(verb, args + (["--json"] if as_json else []), sandbox, {"damage": done}, limit=30)
        assert problem is None, problem

    property()


@pytest.mark.parametrize("verb,examples", [("report", 80), ("gate", 50)])
def test_verbs_on_damaged_result_files(verb, examples, made, sandboxes):
    check = json.loads(made["check"].read_text())
    bench = json.loads(made["bench"].read_text())

    @fuzz_settings(examples)
    @given(data=st.data(), as_json=st.booleans())
    def property(data, as_json):
        sandbox = sandboxes()
        stage(made, sandbox)
        if verb == "report":
            layout = data.draw(st.sampled_from(["check", "bench", "both", "list", "jsonl"]))
            if layout == "list":
                (sandbox / "r.json").write_bytes(dumps(data.draw(json_mutation([check, bench]))).encode("utf-8", "surrogatepass"))
                files = ["r.json"]
            elif layout == "jsonl":
                lines = [dumps(data.draw(json_mutation(d))).replace("\n", " ") for d in (check, bench)]
                (sandbox / "r.jsonl").write_bytes(("\n".join(lines) + "\n").encode("utf-8", "surrogatepass"))
                files = ["r.jsonl"]
            else:
                files = []
                for name, doc in (("check", check), ("bench", bench)):
                    if layout in (name, "both"):
                        (sandbox / f"{name}.json").write_bytes(data.draw(json_text_mutation(doc)))
                        files.append(f"{name}.json")
                    elif layout != "both":
                        files.append(f"{name}.json")
            args = ["report", *files]
            if data.draw(st.booleans()):
                args += ["-o", data.draw(st.sampled_from(["r.md", "r.html", "[/].md", "sub/r.md", "file.txt/r.md", "r.txt"]))]
        else:
            side = data.draw(st.sampled_from(["new.json", "base.json"]))
            (sandbox / side).write_bytes(data.draw(json_text_mutation(bench)))
            args = ["gate", "new.json", "--baseline", "base.json"]
        problem = run_cli(verb, args + (["--json"] if as_json else []), sandbox, {"files": args}, limit=30)
        assert problem is None, problem

    property()


@st.composite
def toml_mutation(draw, text: str) -> str:
    lines = text.splitlines()
    for _ in range(draw(st.integers(1, 2))):
        assignments = [i for i, line in enumerate(lines) if "=" in line]
        index = draw(st.sampled_from(assignments))
        op = draw(st.sampled_from(["value", "value", "delete", "truncate"]))
        if op == "delete":
            del lines[index]
        elif op == "truncate":
            lines = lines[:index]
            break
        else:
            key = lines[index].split("=")[0]
            value = draw(st.sampled_from(['"[/]"', "-1", "0", "1e400", '"a\\nb"', "[]", "{}", "true", f'"{LONG[0]}"', "18446744073709551616", '"nope"', "nan"]))
            lines[index] = f"{key}= {value}"
    return "\n".join(lines) + "\n"


def test_deploy_on_damaged_profiles(made, sandboxes):
    """A user's own profile file, damaged. A profile can stay valid, so a few deploys do run (64x64)."""
    text = made["profile"].read_text()

    @fuzz_settings(8)
    @given(data=st.data(), as_json=st.booleans())
    def property(data, as_json):
        sandbox = sandboxes()
        (sandbox / "mine.toml").write_bytes(data.draw(toml_mutation(text)).encode("utf-8", "surrogatepass"))
        args = ["deploy", "--profile", "mine.toml", "--model", B0, "--height", "64", "--width", "64", "--samples", "1", "-o", "bundle"]
        problem = run_cli(
            "deploy (profile)", args + (["--json"] if as_json else []), sandbox, {"profile": (sandbox / "mine.toml").read_text()[:2000]}, limit=60
        )
        assert problem is None, problem

    property()


def test_verify_py_on_the_device_side_of_damaged_bundles(made, sandboxes):
    """`python -I verify.py` inside a damaged bundle, as a device runs it: exit 0-3, no traceback."""

    @fuzz_settings(15)
    @given(data=st.data())
    def property(data):
        sandbox = sandboxes()
        bundle = copy_folder(made["bundle"], sandbox / "bundle")
        # verify.py and the code it runs (evitdeploy_device/) stay intact: the device runs the script it was given
        done = data.draw(folder_mutation(bundle, outside=sandbox))
        for name in ("verify.py", "evitdeploy_device"):
            script = bundle / name
            if script.is_dir() and not script.is_symlink():
                shutil.rmtree(script)
            script.unlink(missing_ok=True)
            (shutil.copytree if name == "evitdeploy_device" else shutil.copyfile)(made["bundle"] / name, script)
        started = time.perf_counter()
        problem = None
        try:
            proc = subprocess.run([sys.executable, "-I", "verify.py"], cwd=bundle, capture_output=True, text=True, timeout=60, errors="replace")
        except subprocess.TimeoutExpired:
            proc = None
            problem = violation("verify.py", "timeout", "still running after 60 s", [], {"damage": done})
        finally:
            COUNTS["verify.py"] += 1
            SECONDS["verify.py"] += time.perf_counter() - started
        if proc is not None and proc.returncode not in (0, 1, 2, 3):
            problem = violation("verify.py", f"exit {proc.returncode}", proc.stderr[-300:], [], {"damage": done})
        elif proc is not None and "Traceback" in proc.stderr:
            last = proc.stderr.strip().splitlines()[-1]
            problem = violation("verify.py", f"traceback: {last[:120]}", proc.stderr[-500:], [], {"damage": done})
        assert problem is None, problem

    property()


def test_fuzz_example_counts(tmp_path_factory, capsys):
    """The number of generated examples per verb (for the closing note), printed and saved."""
    summary = {verb: {"examples": COUNTS[verb], "seconds": round(SECONDS[verb], 1)} for verb in sorted(COUNTS)}
    path = tmp_path_factory.getbasetemp() / "fuzz-counts.json"
    path.write_text(json.dumps(summary, indent=1))
    assert json.loads(path.read_text()) == summary
    with capsys.disabled():
        print("\nfuzz examples per verb: " + ", ".join(f"{v} {s['examples']} ({s['seconds']} s)" for v, s in summary.items()))
