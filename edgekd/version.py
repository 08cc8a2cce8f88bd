"""The package version, in a module of its own so that code inside the package can read it without
importing the public API in ``edgekd/__init__.py``."""

__version__ = "0.1.0"
