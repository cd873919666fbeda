"""Build the images here with podman, the way ``make images`` does (no Docker engine, no image registry).

1. The base: Debian bookworm with Python 3.11 from Debian's packages (``mmdebstrap``, then
   ``podman import``), made once and kept as ``localhost/t2i-debian-py:bookworm``. Releases build
   on the upstream ``python:3.11.x-slim-bookworm`` tag instead (the Dockerfiles' default).
2. ``docker/runtime.Dockerfile`` and ``docker/tools.Dockerfile``, tagged
   ``localhost/text2image-search:<version>`` and ``localhost/text2image-search-tools:<version>``
   (the version of pyproject.toml). pip inside the build reaches the registries as the host's pip
   does: the host's settings (``pip config list``) are passed as build arguments, and its CA bundle
   and local index and wheel folders are mounted read-only at the same paths. torch comes from
   those local folders (the CPU wheel), not from PyTorch's index.
3. Images left untagged by a rebuild are removed, so the storage does not grow with every run;
   the stages that run pip are tagged ``…-deps``/``…-wheel`` and so stay cached.

podman reads ``docker/containers.conf`` (``CONTAINERS_CONF``) unless the caller set another.

Also ``docker/triton-cpu.Dockerfile`` and ``docker/milvus.Dockerfile``: the local CPU Triton and
standalone Milvus that ``k8s/overlays/local`` runs (tagged the same way).

Usage: ``python3 docker/build.py [runtime] [tools] [triton-cpu] [milvus]`` (all by default);
``--print-tags`` prints ``NAME TAG`` lines.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parents[1]
CONTAINERS_CONF = ROOT / "docker" / "containers.conf"
BASE_IMAGE = "localhost/t2i-debian-py:bookworm"
# The product's images, and the local CPU Triton and standalone Milvus that the stack in containers
# runs in their place of NVIDIA's and Milvus's images (k8s/overlays/local).
DOCKERFILES = {name: ROOT / "docker" / f"{name}.Dockerfile" for name in ("runtime", "tools", "triton-cpu", "milvus")}
NAMES = {
    "runtime": "localhost/text2image-search",
    "tools": "localhost/text2image-search-tools",
    "triton-cpu": "localhost/text2image-search-triton-cpu",
    "milvus": "localhost/text2image-search-milvus",
}
# The stages that run pip, built first with the host's folders mounted.
PIP_STAGES = {"runtime": ("deps", "wheel"), "tools": ("deps", "wheel"), "triton-cpu": ("build",), "milvus": ("build",)}
# pip settings passed into the builds, by their name in pip's configuration.
PIP_SETTINGS = ("index-url", "extra-index-url", "find-links", "trusted-host", "cert", "default-timeout")
# Debian's slim images leave out documentation, manuals and translations the same way.
DPKG_EXCLUDES = ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/info/*", "/usr/share/locale/*")
DEBIAN_SOURCES = Path("/etc/apt/sources.list.d/debian.sources")


def version() -> str:
    """The distribution's version in pyproject.toml: the images' tag."""
    return str(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"])


def tag(image: str) -> str:
    """The tag ``make images`` gives ``runtime`` or ``tools``."""
    return f"{NAMES[image]}:{version()}"


def stage_tag(image: str, stage: str) -> str:
    """The tag of a build stage of ``image`` (tagged, so that pruning keeps its cached layers)."""
    name, _, version_tag = tag(image).partition(":")
    return f"{name}-{stage}:{version_tag}"


def podman_env() -> dict[str, str]:
    """The environment for podman: the project's containers.conf unless CONTAINERS_CONF is set."""
    return {**os.environ, "CONTAINERS_CONF": os.environ.get("CONTAINERS_CONF", str(CONTAINERS_CONF))}


def run(command: list[str], stdout: int | None = None) -> None:
    """Run ``command`` with podman's environment, echoing it; raise on failure."""
    print("+", shlex.join(command), flush=True)
    subprocess.run(command, check=True, text=True, env=podman_env(), stdout=stdout)


def image_exists(name: str) -> bool:
    """True when podman's storage holds ``name``."""
    return subprocess.run(["podman", "image", "exists", name], check=False, env=podman_env()).returncode == 0


def pip_config() -> dict[str, str]:
    """The host pip's settings that matter for reaching the registries (environment first, as pip reads them)."""
    listing = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=True).stdout
    found: dict[str, dict[str, str]] = {}
    for line in listing.splitlines():
        key, _, value = line.partition("=")
        section, _, name = key.rpartition(".")
        if name in PIP_SETTINGS and section in (":env:", "global", "install", "wheel"):
            found.setdefault(name, {})[section] = value.strip().strip("'\"")
    return {name: next(sections[s] for s in (":env:", "install", "wheel", "global") if s in sections) for name, sections in found.items()}


def local_folders(settings: dict[str, str]) -> list[Path]:
    """The host folders the pip settings read from: find-links folders and ``file://`` indexes (with their files)."""
    folders: list[Path] = []
    for name in ("index-url", "extra-index-url", "find-links"):
        for value in settings.get(name, "").split():
            url = urlparse(value)
            if url.scheme not in ("", "file"):
                continue
            path = Path(url.path if url.scheme else value)
            # A simple index (…/simple/<name>/index.html) links to files beside its folder.
            folder = path.parent if path.name == "simple" else path
            if folder.is_dir() and folder not in folders:
                folders.append(folder)
    return folders


def pip_build_options() -> tuple[list[str], list[str]]:
    """``--build-arg`` options, and read-only ``--volume`` options, that give the build the host's pip."""
    settings = pip_config()
    args: list[str] = []
    for name, value in settings.items():
        args += ["--build-arg", f"PIP_{name.upper().replace('-', '_')}={value}"]
    volumes: list[str] = []
    for path in [*local_folders(settings), *([Path(settings["cert"])] if "cert" in settings else [])]:
        volumes += ["--volume", f"{path}:{path}:ro"]
    return args, volumes


def build_base(force: bool = False) -> None:
    """Make the Debian base image from Debian's packages (about a minute) unless podman holds it."""
    if image_exists(BASE_IMAGE) and not force:
        return
    sources = [str(DEBIAN_SOURCES)] if DEBIAN_SOURCES.exists() else []
    with tempfile.TemporaryDirectory(prefix="t2i-base-") as scratch:
        rootfs = Path(scratch) / "rootfs.tar"
        run(
            [
                "mmdebstrap",
                "--variant=minbase",
                "--include=python3,python3-venv,ca-certificates,passwd",
                '--aptopt=Acquire::Check-Valid-Until "false"',
                '--aptopt=Acquire::Check-Date "false"',
                *[f"--dpkgopt=path-exclude={pattern}" for pattern in DPKG_EXCLUDES],
                "--dpkgopt=path-include=/usr/share/doc/*/copyright",
                "--customize-hook=rm -rf $1/var/lib/apt/lists/* $1/var/cache/apt/*",
                "bookworm",
                str(rootfs),
                *sources,
            ]
        )
        run(["podman", "import", "--change", "ENV LANG=C.UTF-8", "--change", 'CMD ["python3"]', str(rootfs), BASE_IMAGE])


def build(image: str) -> None:
    """Build one image of ``DOCKERFILES`` on the local base with the host's pip, and tag it.

    The stages that run pip (``PIP_STAGES``: ``deps`` and ``wheel``, or ``build`` for the local
    Triton and Milvus) are built first with the host's folders mounted; the full build then finds them cached and runs the final stage without those mounts,
    so that no trace of the host (the empty mount points podman leaves) reaches the image.
    """
    args, volumes = pip_build_options()
    args = ["--build-arg", f"BASE_IMAGE={BASE_IMAGE}", *args]
    if image == "tools":
        args += ["--build-arg", "TORCH_INDEX_URL="]
    podman_build = ["podman", "build", "--pull=never", "--layers", "-f", str(DOCKERFILES[image]), *args]
    started = time.monotonic()
    for stage in PIP_STAGES[image]:
        run([*podman_build, *volumes, "--target", stage, "-t", stage_tag(image, stage), str(ROOT)])
    run([*podman_build, "-t", tag(image), str(ROOT)])
    print(f"built {tag(image)} in {time.monotonic() - started:.0f} s", flush=True)


def prune() -> None:
    """Remove the untagged images that rebuilds left behind (not the cached layers of the current ones)."""
    run(["podman", "image", "prune", "--force"], stdout=subprocess.DEVNULL)


def main(argv: list[str] | None = None) -> int:
    """Build the base when missing, then the named images (both by default)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="*", help=f"any of {', '.join(DOCKERFILES)} (default: all)")
    parser.add_argument("--rebuild-base", action="store_true", help="make the Debian base again")
    parser.add_argument("--print-tags", action="store_true", help="print the tags and exit")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.images) - set(DOCKERFILES))
    if unknown:
        parser.error(f"unknown images {unknown}")
    if args.print_tags:
        print("\n".join(f"{image} {tag(image)}" for image in DOCKERFILES))
        return 0
    for tool in ("podman", "mmdebstrap"):
        if shutil.which(tool) is None:
            print(f"{tool} is missing: make images installs it (apt-get install podman buildah mmdebstrap runc catatonit)", file=sys.stderr)
            return 2
    build_base(force=args.rebuild_base)
    for image in args.images or list(DOCKERFILES):
        build(image)
    prune()
    return 0


if __name__ == "__main__":
    sys.exit(main())
