"""Rules on the package's source, checked by parsing it (no import, no model built)."""

from __future__ import annotations

import ast
from pathlib import Path

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
