"""``python -m pytest_omni_perf.serve``: run the shipped server until SIGTERM/SIGINT."""

from __future__ import annotations

import signal
import sys

from pytest_omni_perf.serve.cli import stop_on_signal, main

if __name__ == "__main__":
    signal.signal(signal.SIGINT, stop_on_signal)
    sys.exit(main())
