"""The plugin's version, in a module that imports nothing: the JSON report, the history's rows
and the shipped server's ``--version`` read it without loading the package's public types,
and the wheel's metadata is built from it (pyproject.toml, ``tool.setuptools.dynamic``)."""

__version__ = "0.1.0"
