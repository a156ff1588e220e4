"""Ctrl-C stops a sweep wherever the sweep was started from, and never in the middle of a record.

A shell without job control starts its background jobs (`evitdeploy sweep ... &` in a script, a CI
step sent to the background) with SIGINT ignored, and Python then installs no KeyboardInterrupt
handler at all: such a driver never hears `kill -INT`, its farm tasks run to the end and it exits 0.
A process started from a Ray worker inherits SIGINT blocked, with the same effect.

Python runs its SIGINT handler in the main thread between bytecodes, so a call that blocks in C
(a Ray client call to a busy head) can hold the KeyboardInterrupt back. The C-level handler still
writes the signal's number to the wakeup fd: a watcher thread reads it and, if the sweep has not
ended GRACE_S later, finishes the record being written, says "interrupted" and exits 130 itself.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import threading
from contextlib import contextmanager

GRACE_S = 15.0  # after Ctrl-C the sweep ends within this, even if a call into the cluster hangs
EXIT_INTERRUPTED = 130
_whole = threading.RLock()  # held while a record is written: the watcher never exits in the middle of one


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
        with _watched():
            yield
    finally:
        if replaced:
            signal.signal(signal.SIGINT, previous)
        if was_blocked:
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})


@contextmanager
def _watched():
    """A watcher thread that ends the process GRACE_S after a SIGINT the block has not ended on."""
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    try:
        previous = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    except ValueError:  # not the main thread of the main interpreter
        os.close(read_end), os.close(write_end)
        yield
        return
    ended = threading.Event()
    watcher = threading.Thread(target=_watch, args=(read_end, ended), name="evitdeploy-sigint-watch", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        ended.set()
        signal.set_wakeup_fd(previous)
        watcher.join()
        os.close(read_end), os.close(write_end)


def _watch(read_end: int, ended: threading.Event) -> None:
    while not ended.is_set():
        ready, _, _ = select.select([read_end], [], [], 0.2)
        if ready and signal.SIGINT in os.read(read_end, 64) and not ended.wait(GRACE_S):
            with _whole:
                for stream in (sys.stdout, sys.stderr):
                    stream.flush()
                os.write(2, b"interrupted\n")  # what the CLI says on Ctrl-C; it cannot say it from a stuck thread
                os._exit(EXIT_INTERRUPTED)


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
        with _whole:
            yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received and callable(previous):
        previous(signal.SIGINT, None)
