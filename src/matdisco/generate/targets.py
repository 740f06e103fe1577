"""Target compositions of the structure generators.

Both generators (WGAN-GP and templates) take the same targets: an explicit list of formulas
from config (``generate.compositions``) or else the top ``generate.n_top`` rows of the
proposal table written by the ``propose`` rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from matdisco.core.composition import normalize_formula

__all__ = ["target_compositions"]


def target_compositions(
    proposals_csv: str | Path | None,
    n_top: int,
    compositions: Sequence[str] | None = None,
) -> list[str]:
    """Reduced formulas to generate structures for, best first, without repeats.

    Args:
        proposals_csv: the proposal table (needs columns ``rank`` and ``formula``); may be
            None when ``compositions`` is given.
        n_top: how many of the best-ranked proposals to take.
        compositions: explicit formulas; when given, they are used instead of the proposals.

    Returns:
        Reduced formulas (pymatgen), in rank order.

    Raises:
        FormulaError: an unparsable formula (named in the message).
    """
    if compositions:
        raw = list(compositions)
    else:
        if proposals_csv is None:
            raise ValueError("no proposals table and no generate.compositions given")
        table = pd.read_csv(proposals_csv)
        missing = {"rank", "formula"} - set(table.columns)
        if missing:
            raise ValueError(f"{proposals_csv}: missing columns {sorted(missing)}")
        raw = table.sort_values("rank")["formula"].astype(str).tolist()
    seen: list[str] = []
    for f in raw:
        reduced = normalize_formula(f)
        if reduced not in seen:
            seen.append(reduced)
    return seen if compositions else seen[:n_top]
