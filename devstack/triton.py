"""Launch a local Triton server from the ``nvidia-pytriton`` wheel, on loopback, on the CPU.

The wheel carries a real ``tritonserver`` (2.51) with only the python backend. Its stub must sit
next to ``libtriton_python.so``, so a backend folder is built under the work dir rather than
editing site-packages. The stub embeds Python 3.11 and finds numpy<2 and onnxruntime through the
Triton virtual environment, whose ``bin`` is put first on ``PATH`` (the stub's interpreter reads
that venv's ``pyvenv.cfg``).
"""

from __future__ import annotations

import os
import shutil
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from core.manifest import TEXT_MODEL, VISION_MODEL
from core.settings import Settings
from devstack.process import ChosenPorts, ManagedProcess, namespace_prefix, start_on_ports

STUB_PYTHON = "3.11"


@dataclass
class TritonPorts(ChosenPorts):
    """Loopback ports of one Triton server; each one left 0 is chosen (``free_port``), and chosen again when it was taken."""

    grpc: int = 0
    http: int = 0
    metrics: int = 0


def pytriton_root(triton_env: Path) -> Path:
    """``site-packages`` of the Triton environment that holds ``pytriton``.

    Raises:
        FileNotFoundError: with the command that creates it.
    """
    matches = sorted(triton_env.glob("lib/python*/site-packages/pytriton/tritonserver/bin/tritonserver"))
    if not matches:
        raise FileNotFoundError(f"no tritonserver under {triton_env}; run 'make install' to create the Triton environment")
    return matches[0].parents[3]


def build_backend_dir(site: Path, work_dir: Path) -> Path:
    """Copy the python backend and the Python 3.11 stub into ``work_dir/backends/python``."""
    source = site / "pytriton" / "tritonserver"
    target = work_dir / "backends" / "python"
    target.mkdir(parents=True, exist_ok=True)
    for name in ("libtriton_python.so", "triton_python_backend_utils.py"):
        shutil.copy2(source / "backends" / "python" / name, target / name)
    shutil.copy2(source / "python_backend_stubs" / STUB_PYTHON / "triton_python_backend_stub", target / "triton_python_backend_stub")
    return target.parent


def triton_process(
    repo: Path, work_dir: Path, ports: TritonPorts, triton_env: Path | None = None, config_name: str = "cpu", extra_args: tuple[str, ...] = ()
) -> ManagedProcess:
    """A not-yet-started Triton server serving ``clip_text`` and ``clip_vision`` from ``repo``.

    ``triton_env`` is the python backend's virtual environment (default ``T2I_TRITON_ENV``);
    ``extra_args`` go to ``tritonserver`` as they are (``--grpc-use-ssl=true``...).
    """
    work_dir = Path(work_dir).resolve()  # Triton runs with work_dir as its cwd
    triton_env = Path(triton_env or Settings().triton_env).resolve()
    site = pytriton_root(triton_env)
    backends = build_backend_dir(site, work_dir)
    argv = [
        str(site / "pytriton" / "tritonserver" / "bin" / "tritonserver"),
        f"--model-repository={Path(repo).resolve()}",
        f"--backend-directory={backends}",
        "--model-control-mode=explicit",
        f"--load-model={TEXT_MODEL}",
        f"--load-model={VISION_MODEL}",
        f"--model-config-name={config_name}",
        "--grpc-address=127.0.0.1",
        f"--grpc-port={ports.grpc}",
        "--http-address=127.0.0.1",
        f"--http-port={ports.http}",
        "--metrics-address=127.0.0.1",
        f"--metrics-port={ports.metrics}",
        "--allow-gpu-metrics=false",
        "--allow-cpu-metrics=true",
        "--exit-timeout-secs=5",
        "--log-verbose=0",
        *extra_args,
    ]
    env = dict(os.environ)
    env["PATH"] = f"{triton_env / 'bin'}:{env.get('PATH', '')}"
    env["LD_LIBRARY_PATH"] = ":".join(filter(None, [str(site / "nvidia_pytriton.libs"), env.get("LD_LIBRARY_PATH")]))
    env.pop("PYTHONPATH", None)
    env.pop("PYTHONHOME", None)
    # In a PID namespace of its own, Triton is its init: when it dies (even by SIGKILL, as when its
    # launcher dies), the kernel kills its python-backend stubs too, which would otherwise run on
    # with no parent (seen: a stub at 35% CPU half a minute after its Triton was killed).
    prefix = namespace_prefix("--pid", "--kill-child") or ()
    return ManagedProcess("triton", [*prefix, *argv], work_dir / "triton.log", env=env, cwd=work_dir, ports=(ports.grpc, ports.http, ports.metrics))


def models_ready(http_port: int) -> bool:
    """True when both CLIP models are loaded and ready."""
    for model in (TEXT_MODEL, VISION_MODEL):
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/v2/models/{model}/ready", timeout=2) as resp:
            if resp.status != 200:
                return False
    return True


def start_triton(
    repo: Path,
    work_dir: Path,
    ports: TritonPorts | None = None,
    timeout_s: float = 120.0,
    triton_env: Path | None = None,
    config_name: str = "cpu",
    extra_args: tuple[str, ...] = (),
) -> tuple[ManagedProcess, TritonPorts]:
    """Start Triton and wait until both models are ready.

    Without ``ports``, free ones are chosen (``free_port``). Ports that were chosen (all of them,
    or those left 0 in ``ports``) are chosen again, up to ``PORT_ATTEMPTS`` starts, when one was
    taken before Triton bound it; ports given are never changed (``start_on_ports``).

    Returns:
        The process and its ports, all fixed now (a restart on them keeps them).

    Raises:
        ProcessFailed: Triton exited or did not become ready; the message has its log tail.
    """

    def start(chosen: TritonPorts) -> tuple[ManagedProcess, TritonPorts]:
        process = triton_process(repo, work_dir, chosen, triton_env, config_name, extra_args)
        process.chosen_ports = chosen.chosen_numbers
        process.start()
        try:
            process.wait_until(lambda: models_ready(chosen.http), timeout_s, "ready (clip_text and clip_vision loaded)")
        except BaseException:
            process.stop()
            raise
        return process, chosen.kept()

    return start_on_ports(start, ports or TritonPorts(), "triton")
