"""Shared core: compositions (composition.py) and structure matching (matching.py)."""
