"""SIGTERM ends a pytest run like Ctrl-C while the plugin is configured."""

from __future__ import annotations

import signal
import threading

import pytest

_installed_key = pytest.StashKey[bool]()


def interrupt_on_sigterm(config: pytest.Config) -> None:
    """Make SIGTERM (CI cancel, ``timeout``, ``docker stop``) end the run like Ctrl-C.

    Python's default kills at once: no session finish (the partial JSON report is lost), no
    unconfigure (engines reaped only when they notice the closed socket). As
    KeyboardInterrupt, pytest finishes the session and stops every engine. A second SIGTERM
    kills as before. Left alone where someone else already handles SIGTERM.
    """
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL):
        return

    def interrupt(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise KeyboardInterrupt(f"SIGTERM (signal {signum})")

    signal.signal(signal.SIGTERM, interrupt)
    config.stash[_installed_key] = True


def restore(config: pytest.Config) -> None:
    """Give SIGTERM its default action back, if ``interrupt_on_sigterm`` took it."""
    if config.stash.get(_installed_key, False):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
