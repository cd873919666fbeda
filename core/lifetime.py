"""Child processes that die with their parent, even when the parent is SIGKILLed (Linux).

A process pool's workers, or a launcher's servers, would otherwise outlive a parent killed without
warning and keep running with no owner (seen here: a reindex's decode worker, still alive 18
minutes after its job was SIGKILLed).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys

logger = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(sig: int = signal.SIGKILL, parent_pid: int | None = None) -> None:
    """Ask the kernel to send ``sig`` to this process when its parent exits; exit at once if it already has.

    Use it as a ``ProcessPoolExecutor`` initializer, with ``parent_pid=os.getpid()`` of the parent
    (the check closes the race of a parent that died before the call). Linux sends the signal when
    the *thread* that started the child exits, so start such children from a long-lived thread.
    Elsewhere than Linux it only does the check.
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
            logger.warning("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(1)


# Runs in the child, then execs the server: prctl(PR_SET_PDEATHSIG), exit if the launcher is already
# gone, exec. A separate program, not a ``preexec_fn``: a ``preexec_fn`` makes subprocess fork() instead
# of vfork(), and gRPC's fork handlers abort a child forked while other threads use gRPC (seen here:
# Triton restarted under load exited with SIGABRT before writing a line).
_EXEC_DYING_WITH_PARENT = (
    "import ctypes, os, sys; ctypes.CDLL(None).prctl(1, int(sys.argv[1]), 0, 0, 0); "
    "os.getppid() == int(sys.argv[2]) or os._exit(1); os.execvp(sys.argv[3], sys.argv[3:])"
)


def dying_with_parent(argv: list[str], sig: int = signal.SIGKILL) -> list[str]:
    """``argv`` wrapped so that the process gets ``sig`` when the launching thread exits (Linux; elsewhere ``argv``)."""
    if not sys.platform.startswith("linux"):
        return argv
    return [sys.executable, "-S", "-c", _EXEC_DYING_WITH_PARENT, str(int(sig)), str(os.getpid()), *argv]
