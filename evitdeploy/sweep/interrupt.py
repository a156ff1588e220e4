"""Ctrl-C stops a sweep wherever the sweep was started from, and never in the middle of a record.

A shell without job control starts its background jobs (`evitdeploy sweep ... &` in a script, a CI
step sent to the background) with SIGINT ignored, and Python then installs no KeyboardInterrupt
handler at all: such a driver never hears `kill -INT`, its farm tasks run to the end and it exits 0.
A process started from a Ray worker inherits SIGINT blocked, with the same effect.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()  # only there can Python take a signal


@contextmanager
def sigint_interrupts():
    """Inside the block SIGINT raises KeyboardInterrupt, even where it arrived ignored or blocked;
    both are restored when the block ends."""
    if not _main_thread():
        yield
        return
    was_blocked = signal.SIGINT in signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    previous = signal.getsignal(signal.SIGINT)
    replaced = previous in (signal.SIG_IGN, signal.SIG_DFL)  # None: a handler set outside Python, left alone
    if replaced:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        if replaced:
            signal.signal(signal.SIGINT, previous)
        if was_blocked:
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})


@contextmanager
def sigint_deferred():
    """A SIGINT inside the block is held until the block ends and then handled as usual, so what the
    block writes (a results line, its progress line) or submits (a farm task) is whole."""
    if not _main_thread() or signal.getsignal(signal.SIGINT) is None:  # None: not ours to swap and put back
        yield
        return
    received = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received and callable(previous):
        previous(signal.SIGINT, None)
