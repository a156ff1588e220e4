"""Print the extras the `all` extra of pyproject.toml names, comma-separated (the Makefile installs
them by name: pip resolves a package's extra that names the package itself very slowly)."""

import re
import sys
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
(everything,) = project["optional-dependencies"]["all"]
sys.stdout.write(re.fullmatch(r"evitdeploy\[(.*)\]", everything).group(1) + "\n")
