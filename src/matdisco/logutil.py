"""Logging set-up for the workflow's script shims."""

from __future__ import annotations

import logging
import sys
import traceback
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["log_to"]


@contextmanager
def log_to(path: str | Path, level: int = logging.INFO) -> Iterator[logging.Logger]:
    """Send ``matdisco`` logging and Python warnings to ``path`` (and stderr) for a block.

    An exception raised inside the block is written to the log with its traceback and
    re-raised, so the Snakemake job fails with the reason in its log file.
    """
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    fh = logging.FileHandler(path, mode="w", encoding="utf-8")
    fh.setFormatter(fmt)
    sh = logging.StreamHandler(sys.stderr)
    sh.setFormatter(fmt)
    root = logging.getLogger("matdisco")
    root.setLevel(level)
    root.addHandler(fh)
    root.addHandler(sh)
    logging.captureWarnings(True)
    wlog = logging.getLogger("py.warnings")
    wlog.addHandler(fh)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            yield root
    except BaseException:
        root.error("failed:\n%s", traceback.format_exc())
        raise
    finally:
        root.removeHandler(fh)
        root.removeHandler(sh)
        wlog.removeHandler(fh)
        fh.close()
