"""What a new backend or flag must not have to keep in step by hand: the install extras and the
command line's defaults, each derived from (or held equal to) its one source."""

from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

pytestmark = pytest.mark.fast
ROOT = Path(__file__).resolve().parents[1]


def test_the_all_extra_installs_every_backend_pip_can_install():
    from evitdeploy.backends import BACKENDS

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    (everything,) = project["optional-dependencies"]["all"]
    in_all = set(re.fullmatch(r"evitdeploy\[(.*)\]", everything).group(1).split(","))
    from_pypi = {b.extra for b in BACKENDS.values() if b.extra and b.install.startswith("pip install") and f"'evitdeploy[{b.extra}]'" in b.install}
    assert from_pypi and from_pypi <= in_all, f"add {sorted(from_pypi - in_all)} to the all extra"
    assert in_all <= set(project["optional-dependencies"]), "the all extra names an extra pyproject does not define"


def _request_field(request_type, name: str):
    found = {f.name: f for f in dataclasses.fields(request_type)}.get(name)
    if found is None:
        return dataclasses.MISSING
    return found.default_factory() if found.default_factory is not dataclasses.MISSING else found.default


# CLI parameter -> (request type, its field) where the names differ
RENAMED = {"min_cosine_target": "min_cosine", "calib_method": "method", "min_time": "min_time_s", "model": "model_name"}


@pytest.mark.parametrize("verb", ["export", "plan", "check", "bench", "deploy", "sweep", "predict"])
def test_command_line_defaults_are_the_requests(verb):
    """A flag's default is its request field's (or PrecisionOptions'), so the CLI and a Python caller
    get the same thing when they say nothing."""
    import typer.main

    from evitdeploy import requests
    from evitdeploy.cli import app
    from evitdeploy.precision.options import PrecisionOptions
    from evitdeploy.sweep import CellSettings

    command = typer.main.get_command(app).commands[verb]
    sources = [
        getattr(requests, f"{verb.capitalize()}Request", None),
        PrecisionOptions if verb in ("export", "plan", "deploy") else None,
        CellSettings if verb == "sweep" else None,
    ]
    compared = 0
    for param in command.params:
        for source in filter(None, sources):
            name = RENAMED.get(param.name, param.name)
            default = _request_field(source, name if dataclasses.is_dataclass(source) and name in {f.name for f in dataclasses.fields(source)} else param.name)
            if default is dataclasses.MISSING or param.default is None and default is None:
                continue
            cli_default = param.default
            assert cli_default == default or (default == () and cli_default in ("", None)), (verb, param.name, cli_default, default)
            compared += 1
            break
    assert compared, f"no flag of {verb} was compared with a request field"
