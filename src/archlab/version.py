"""archlab's version, in a module that imports nothing (``archlab --version`` reads only this)."""

__version__ = "0.1.0"
