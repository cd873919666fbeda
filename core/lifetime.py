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
from collections.abc import Callable

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


def parent_death_signal(sig: int = signal.SIGKILL) -> Callable[[], None]:
    """A ``preexec_fn`` for ``subprocess.Popen``: the child gets ``sig`` when the launching thread exits.

    libc is loaded here, before the fork, so that the child only makes the ``prctl`` call (no
    ``dlopen`` between fork and exec). The child exits at once if the launcher is already gone.
    """
    parent = os.getpid()
    if not sys.platform.startswith("linux"):
        return lambda: None
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return preexec
