"""Rules on the package's source, checked by parsing it (no import, no model built)."""

from __future__ import annotations

import ast
import re
import tokenize
from pathlib import Path

import pytest

pytestmark = pytest.mark.fast  # source rules, parsed, nothing imported

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "evitdeploy"
MAX_POSITIONAL = 3

# Files (or folders: every .py under them) held to the rule, relative to the repository root: the
# whole package.
CHECKED = ("evitdeploy",)


def _python_files(path: Path) -> list[Path]:
    return sorted(path.rglob("*.py")) if path.is_dir() else [path]


def defined_names(sources: list[str]) -> set[str]:
    """Names of the functions, methods and classes the sources define, at any depth."""
    names = set()
    for source in sources:
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
    return names


def long_positional_calls(source: str, names: set[str], filename: str = "<source>") -> list[str]:
    """`file:line: name() takes N positional arguments` for every call, by plain name or as an
    attribute (`x.name`), to one of `names` with more than MAX_POSITIONAL positional arguments
    (`*args` not counted)."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
        positional = sum(not isinstance(arg, ast.Starred) for arg in node.args)
        if name in names and positional > MAX_POSITIONAL:
            found.append((node.lineno, f"{filename}:{node.lineno}: {name}() takes {positional} positional arguments"))
    return [text for _, text in sorted(found)]


def test_checked_paths_exist():
    missing = [path for path in CHECKED if not (ROOT / path).exists()]
    assert not missing, f"CHECKED names paths that are gone (moved? update CHECKED): {missing}"


def test_long_positional_calls_finds_a_regression():
    names = defined_names(["def export_model(a, b, c, d, e=None): pass\nclass Request: pass\n"])
    source = (
        "export_model(1, 2, 3, e=4)\n"  # three positional: fine
        "api.export_model(1, 2, 3, 4)\n"  # four, through an attribute
        "export_model(1, *rest, 2, 3, 4)\n"  # four plain ones; the starred one is not counted
        "export_model(*rest)\n"
        "Request(1, 2, 3, 4, 5)\n"  # a class is called too
        "print(1, 2, 3, 4, 5)\n"  # not defined in the package
    )
    assert long_positional_calls(source, names, "x.py") == [
        "x.py:2: export_model() takes 4 positional arguments",
        "x.py:3: export_model() takes 4 positional arguments",
        "x.py:5: Request() takes 5 positional arguments",
    ]


def test_no_call_passes_more_than_three_positional_arguments():
    names = defined_names([path.read_text() for path in _python_files(PACKAGE)])
    found = []
    for checked in CHECKED:
        for path in _python_files(ROOT / checked):
            found += long_positional_calls(path.read_text(), names, str(path.relative_to(ROOT)))
    assert not found, "pass the arguments after the third by keyword:\n" + "\n".join(found)


# -- no module outside evitdeploy/backends/ branches on a backend's name ---------------------------
# What a backend is and takes lives in its descriptor (options, capabilities); code elsewhere asks
# the registry. A comparison with a backend's name, a lookup by it, or a runner capability sniffed
# with hasattr/getattr is how backend knowledge leaks out of its folder.


def backend_spellings() -> set[str]:
    from evitdeploy.backends import BACKENDS

    return {name for backend in BACKENDS.values() for name in backend.names}


def _named(node, spellings: set[str]) -> bool:
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str) and node.value in spellings
    return isinstance(node, (ast.Tuple, ast.List, ast.Set)) and any(_named(item, spellings) for item in node.elts)


def backend_name_branches(source: str, spellings: set[str], filename: str = "<source>") -> list[str]:
    """`file:line: why` for every comparison with a backend's name, subscript or registry lookup by
    it, and hasattr/getattr sniffing of a runner."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Compare) and any(_named(side, spellings) for side in (node.left, *node.comparators)):
            found.append((node.lineno, "compares with a backend's name"))
        elif isinstance(node, ast.Subscript) and _named(node.slice, spellings):
            found.append((node.lineno, "looks up by a backend's name"))
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            if name in ("get_backend", "find", "canonical_target") and node.args and _named(node.args[0], spellings):
                found.append((node.lineno, f"asks the registry for a backend by name ({name})"))
            elif name in ("hasattr", "getattr") and node.args and "runner" in ast.unparse(node.args[0]):
                found.append((node.lineno, f"sniffs a runner's capability with {name}"))
    return [f"{filename}:{line}: {why}" for line, why in sorted(found)]


def test_backend_name_branches_finds_a_regression():
    spellings = {"tflite", "trt", "executorch"}
    source = (
        'if request.channels_last and backend.name != "tflite": pass\n'
        'recipe_only = profile.backend in ("trt", "x")\n'
        'options = OPTIONS["executorch"]\n'
        'backend = get_backend("trt")\n'
        'if hasattr(runner, "gpu_times_ms"): pass\n'
        'help = "exports for tflite and trt"\n'  # prose: not a branch
        "if backend.gpu_compute_timing: pass\n"
    )
    assert [line.split(": ", 1)[0] for line in backend_name_branches(source, spellings)] == [f"<source>:{n}" for n in (1, 2, 3, 4, 5)]


def test_no_module_outside_the_backends_branches_on_a_backend_name():
    spellings = backend_spellings()
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if (PACKAGE / "backends") in path.parents:
            continue
        found += backend_name_branches(path.read_text(), spellings, str(path.relative_to(ROOT)))
    assert not found, "backend knowledge outside evitdeploy/backends/ (declare it in the Backend descriptor):\n" + "\n".join(found)


def test_every_noqa_says_why():
    """A silenced lint rule is a decision: `# noqa: CODE (why)`, never a bare `# noqa`."""
    bare = []
    for path in sorted([*PACKAGE.rglob("*.py"), *(ROOT / "tests").glob("*.py"), *(ROOT / "benchmarks").glob("*.py")]):
        with path.open("rb") as source:
            comments = [token for token in tokenize.tokenize(source.readline) if token.type == tokenize.COMMENT]
        for token in comments:
            if "noqa" in token.string and not re.search(r"# noqa: [A-Z]+[0-9]+(, ?[A-Z]+[0-9]+)* +\(.+\)", token.string):
                bare.append(f"{path.relative_to(ROOT)}:{token.start[0]}: {token.string}")
    assert not bare, "give each # noqa its reason, `# noqa: CODE (why)`:\n" + "\n".join(bare)
