"""Hashing methods (installed as ``hashkit.methods``); importing this package registers every method."""

from . import dpsh  # noqa: F401
from . import dhn, hashnet  # noqa: F401
from . import ssdh  # noqa: F401
from . import adsh, dihn  # noqa: F401
from . import csq, dpn, greedyhash, orthoarc, orthocos  # noqa: F401
from . import bihalf_sup, ce, ce_tanh, jmlh, sdhc  # noqa: F401
from . import imh, itq, lsh, pcah, sh  # noqa: F401
from . import dch, dfh, dsh, dtsh  # noqa: F401
from . import dbdh, dshsd, dsdh, idhn, lcdsh  # noqa: F401
from . import bihalf, cibhash, greedyhash_unsup, tbh  # noqa: F401
from . import hyp2, mdsh, mihash, qsmih  # noqa: F401
