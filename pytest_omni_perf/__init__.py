"""pytest-omni-perf: does a vLLM-Omni diffusion optimization pay off, and did it break anything?

The pytest plugin itself is ``pytest_omni_perf.plugin`` (entry point ``omni_perf``). This
package imports nothing heavy, so ``pytest --help`` stays fast on any machine.
"""

__version__ = "0.1.0"
