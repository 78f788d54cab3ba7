"""``python -m pytest_omni_perf.history``: see :mod:`pytest_omni_perf.history.cli`."""

from __future__ import annotations

import sys

from pytest_omni_perf.history.cli import main

sys.exit(main())
