"""What the container tests share: podman with the project's settings, and mounts readable by the containers' user."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import urllib.request
from pathlib import Path

from export.samples import sample_photos
from tests.support.stack import PROJECT_ROOT

CONTAINERS_CONF = PROJECT_ROOT / "docker" / "containers.conf"


def podman_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment podman (and podman-compose) run in: the project's containers.conf unless the caller's environment names another."""
    return {"CONTAINERS_CONF": str(CONTAINERS_CONF), **os.environ, **(env or {})}


def podman(*args: str, timeout: float = 300, check: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run podman; with ``check``, a non-zero exit fails with its output."""
    result = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout, env=podman_env(env))
    if check and result.returncode != 0:
        raise AssertionError(f"podman {' '.join(args[:3])} … exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def readable_copy(source: Path, target: Path) -> Path:
    """Copy a file or tree to ``target`` readable by the containers' user, as a Secret or volume mount would be."""
    if source.is_dir():
        shutil.copytree(source, target)
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    for path in [target, *target.rglob("*")] if target.is_dir() else [target]:
        path.chmod(path.stat().st_mode | stat.S_IRGRP | stat.S_IROTH | (stat.S_IXGRP | stat.S_IXOTH if path.is_dir() else 0))
    return target


def readable_photos(folder: Path, count: int) -> Path:
    """``count`` sample photos copied into ``folder`` (made), readable by the containers' user."""
    folder.mkdir(parents=True)
    for photo in sample_photos(count):
        readable_copy(photo, folder / photo.name)
    folder.chmod(0o755)
    return folder


def assert_page_searches(page: str) -> None:
    """The search page at ``page`` (``http://host:port``) answers a search with two hits and serves the first one's thumbnail."""
    with urllib.request.urlopen(f"{page}/api/search?q=a%20cat&k=2", timeout=20) as response:
        hits = json.loads(response.read())["hits"]
    assert len(hits) == 2, hits
    with urllib.request.urlopen(f"{page}{hits[0]['thumb']}", timeout=20) as response:
        assert response.status == 200 and response.headers["content-type"] == "image/jpeg"


def assert_locked_down(container: str) -> None:
    """The container runs as user 10001, with no capabilities at all and its root filesystem mounted read-only.

    Each check can fail on its own: the bounding set is empty only with every capability dropped (the
    effective set of a non-root user is empty either way), and the root mount's options say ``ro``
    only with a read-only root (a non-root user cannot write to root-owned folders either way).
    """
    script = "id -u; grep -E '^Cap(Eff|Bnd):' /proc/1/status; awk '$2 == \"/\" {print $4}' /proc/mounts | tail -1"
    lines = podman("exec", container, "sh", "-c", script).stdout.split("\n")
    status = dict(line.split(":\t") for line in lines[1:3])
    root_options = lines[3].split(",")
    assert lines[0] == "10001", (container, lines)
    assert status == {"CapEff": "0000000000000000", "CapBnd": "0000000000000000"}, (container, lines)
    assert "ro" in root_options, (container, lines)
