"""Hashing methods (installed as ``hashkit.methods``); importing this package registers every method."""

from . import dpsh  # noqa: F401
