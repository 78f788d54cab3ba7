"""The perf suite: the built-in tiny models through the real diffusers engine.

Run by the README's main command (``bash scripts/perf-suite.sh``); CPU is fine. The plugin's
own tests (``tests/``) do not collect this folder (see ``tests/conftest.py``).
"""
