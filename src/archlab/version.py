"""archlab's version, in a module that imports nothing (``archlab --version`` reads only this).

The one place a release is numbered: pyproject.toml reads it (``dynamic = ["version"]``), and so
do the package metadata, ``archlab --version`` and the run environment recorded in each store.
"""

__version__ = "0.3.0"
