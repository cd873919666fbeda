"""Print the requirements of pyproject.toml's distribution and of the named extras, one a line.

The images install these in a layer of their own before the sources are copied, so that a change
to the code rebuilds only the wheel's layer; the wheel is then installed with the same extras and
``--no-index`` (which fails if this list missed anything). pyproject.toml stays the only list.

Requirements on the distributions built from this repository (``text2image-client``, in ``client/``)
are left out: the wheel stage builds them, and their own dependencies are the server's too
(tests/unit/test_packaging.py checks it).

Usage: ``python3 requirements.py pyproject.toml gateway,reindex,web``
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

# Distributions whose wheels the image builds from the repository (never from a package index).
BUILT_HERE = {"text2image-client"}


def name_of(requirement: str) -> str:
    """The normalized distribution name of a requirement string."""
    return re.sub(r"[-_.]+", "-", re.split(r"[\s\[<>=!~;@(]", requirement.strip(), maxsplit=1)[0]).lower()


def requirements(pyproject: Path, extras: list[str]) -> list[str]:
    """The base dependencies followed by those of each extra (an unknown extra is an error), less ``BUILT_HERE``."""
    project = tomllib.loads(pyproject.read_text())["project"]
    optional = project.get("optional-dependencies", {})
    unknown = sorted(set(extras) - set(optional))
    if unknown:
        raise SystemExit(f"unknown extras {unknown}; pyproject.toml has {sorted(optional)}")
    listed = [*project["dependencies"], *(requirement for extra in extras for requirement in optional[extra])]
    return [requirement for requirement in listed if name_of(requirement) not in BUILT_HERE]


def main(argv: list[str]) -> int:
    """Print the requirements for ``argv[0]`` (pyproject.toml) and the comma-separated extras ``argv[1]``."""
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    extras = [extra for extra in argv[1].split(",") if extra]
    print("\n".join(requirements(Path(argv[0]), extras)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
