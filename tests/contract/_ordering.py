"""Ordering steps for the contract tests: wait for a state, not a while.

``calls_answered`` is shared by every test package: it lives in
``tests/conftest.py``.
"""

from __future__ import annotations

from tests.conftest import calls_answered

__all__ = ["calls_answered"]
