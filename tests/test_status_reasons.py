"""Every ``status_reason`` the product writes or compares comes from ``StatusReason``.

The checker reads product sources (not migrations) with ``ast`` and reports a
string literal used as a status reason: assigned to or compared with
``status_reason``/``reason``/``REASON_*``, passed as ``reason=`` to a status
change, given as the reason of a ``Change``, or any literal spelling a
hyphenated ``StatusReason`` value. Event reasons (``events.record``) are not
status reasons and are left alone.
"""

from __future__ import annotations

import ast
from pathlib import Path

from billing.enums import StatusReason

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ("cups_backend", "proxy", "billing")
ENUM_FILE = Path("billing/enums.py")
# Calls whose ``reason`` is a print-out's status reason.
STATUS_CALLS = {"transition", "Change", "release", "cancel_held", "PrintOut"}
DISTINCT = {r.value for r in StatusReason if "-" in r.value}


def _name(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return ""


def _is_reason_name(node: ast.AST) -> bool:
    name = _name(node)
    return name in ("status_reason", "reason") or name.upper().startswith("REASON")


def _literal(node: ast.AST | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


def _literals(node: ast.AST | None) -> list[str]:
    """String constants of ``node``, including inside a tuple, a dict's values or an if-else."""
    if node is None:
        return []
    if (text := _literal(node)) is not None:
        return [text]
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return [t for elt in node.elts for t in _literals(elt)]
    if isinstance(node, ast.IfExp):
        return _literals(node.body) + _literals(node.orelse)
    return []


def status_reason_literals(source: str, filename: str = "<source>") -> list[str]:
    """``"file:line: 'literal'"`` for each status-reason string literal in ``source``."""
    tree = ast.parse(source, filename)
    found: list[tuple[int, str]] = []

    def hit(node: ast.AST, text: str) -> None:
        if text:  # "" is no reason (an HTTP reason phrase that was missing)
            found.append((getattr(node, "lineno", 0), text))

    for node in ast.walk(tree):
        if isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            flat = [t for tgt in targets for t in getattr(tgt, "elts", [tgt])]
            if any(_is_reason_name(t) for t in flat):
                for text in _literals(node.value):
                    hit(node, text)
        elif isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            if any(_is_reason_name(s) for s in sides):
                for side in sides:
                    for text in _literals(side):
                        hit(node, text)
        elif isinstance(node, ast.Call):
            callee = _name(node.func)
            for kw in node.keywords:
                if kw.arg == "status_reason" or (kw.arg == "reason" and callee in STATUS_CALLS):
                    for text in _literals(kw.value):
                        hit(node, text)
            if callee == "Change" and len(node.args) > 1:
                for text in _literals(node.args[1]):
                    hit(node, text)
        elif isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if _literal(key) == "status_reason":
                    for text in _literals(value):
                        hit(node, text)
        if (text := _literal(node)) is not None and text in DISTINCT:
            hit(node, text)
    return sorted({f"{filename}:{line}: {text!r}" for line, text in found})


def product_files() -> list[Path]:
    return sorted(p for package in PRODUCT for p in (ROOT / package).rglob("*.py"))


def test_no_status_reason_literal_in_product_code() -> None:
    files = product_files()
    assert len(files) > 50  # the walk found the packages
    problems = [
        problem
        for path in files
        if path.relative_to(ROOT) != ENUM_FILE
        for problem in status_reason_literals(path.read_text(), str(path.relative_to(ROOT)))
    ]
    assert problems == []


def test_the_checker_finds_planted_literals() -> None:
    planted = """
REASON_GONE = "gone-away"
po.status_reason = "late"
if po.status_reason == "held-up":
    pass
await status.transition(s, po, S.CANCELED, actor="x", reason="some-reason")
new, reason = S.CANCELED, "canceled-in-cups"
change = Change(S.CANCELED, "nope")
row = {"status_reason": "x" if a else "y"}
labels = {1: "web-release"}
"""
    found = status_reason_literals(planted)
    texts = sorted(line.split(": ", 1)[1] for line in found)
    assert texts == sorted(
        repr(t)
        for t in (
            "gone-away",
            "late",
            "held-up",
            "some-reason",
            "canceled-in-cups",
            "nope",
            "x",
            "y",
            "web-release",
        )
    )


def test_the_checker_leaves_enum_uses_and_event_reasons_alone() -> None:
    clean = """
po.status_reason = StatusReason.EXPIRED
if po.status_reason in _NOT_RELEASABLE:
    pass
events.record(session, subject_type="reader", reason="tap", actor="x")
await status.transition(s, po, S.CANCELED, actor="x", reason=StatusReason.PRINTED)
title = "expired"  # a word, not a reason
"""
    assert status_reason_literals(clean) == []
