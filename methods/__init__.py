"""Hashing methods (installed as ``hashkit.methods``); importing this package registers every method."""

from . import dpsh  # noqa: F401
from . import dhn, hashnet  # noqa: F401
from . import ssdh  # noqa: F401
from . import adsh, dihn  # noqa: F401
from . import csq, dpn, greedyhash, orthoarc, orthocos  # noqa: F401
from . import bihalf_sup, ce, jmlh, sdhc  # noqa: F401
from . import dch, dfh, dsh, dtsh  # noqa: F401
