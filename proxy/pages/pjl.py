"""Copies a PJL job header asks for (``@PJL SET COPIES=N`` / ``@PJL SET QTY=N``)."""

from __future__ import annotations

import re

from .detect import _skip_pjl

_PJL_COPIES = re.compile(rb"@PJL[ \t]+SET[ \t]+(?:COPIES|QTY)[ \t]*=[ \t]*(\d{1,9})", re.I)
MAX_COPIES = 10_000
"""Larger figures are not believed (1 is kept)."""


def pjl_copies(head: bytes) -> int:
    """The copies of the PJL job header at the start of ``head``; 1 without one.

    ``COPIES`` (uncollated) and ``QTY`` (collated) are two ways to ask for the
    same thing, and drivers often write both with one figure: the larger one
    is taken, not their product.
    """
    end, _language = _skip_pjl(head)
    figures = [int(m.group(1)) for m in _PJL_COPIES.finditer(head, 0, end)]
    copies = max([1, *figures])
    return copies if copies <= MAX_COPIES else 1
