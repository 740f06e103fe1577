"""matdisco: a Snakemake pipeline library for inorganic materials discovery.

The library holds all science code; the Snakemake rules in ``workflow/`` only call it.
Nothing in this package imports snakemake.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
