"""Print the requirements of pyproject.toml's distribution and of the named extras, one a line.

The images install these in a layer of their own before the sources are copied, so that a change
to the code rebuilds only the wheel's layer; the wheel is then installed with the same extras and
``--no-index`` (which fails if this list missed anything). pyproject.toml stays the only list.

Usage: ``python3 requirements.py pyproject.toml gateway,reindex,web``
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path


def requirements(pyproject: Path, extras: list[str]) -> list[str]:
    """The base dependencies followed by those of each extra (an unknown extra is an error)."""
    project = tomllib.loads(pyproject.read_text())["project"]
    optional = project.get("optional-dependencies", {})
    unknown = sorted(set(extras) - set(optional))
    if unknown:
        raise SystemExit(f"unknown extras {unknown}; pyproject.toml has {sorted(optional)}")
    return [*project["dependencies"], *(requirement for extra in extras for requirement in optional[extra])]


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
