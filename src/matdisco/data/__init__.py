"""Data sources that feed the entry store.

Each source module returns a :class:`matdisco.data.base.SourceResult` (entries, ordered
structures, rejected inputs, provenance) that :func:`matdisco.store.write_store` can write:

* :mod:`matdisco.data.cif_dir` -- a folder of CIF files (an ICSD or COD export);
* :mod:`matdisco.data.mp` -- the Materials Project API, with an on-disk snapshot cache.

Submodules are imported lazily by their users, so importing this package is cheap.
"""

from __future__ import annotations
