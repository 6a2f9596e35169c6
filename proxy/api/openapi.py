"""``GET /api/v1/openapi.json``: the HTTP API described (OpenAPI 3.1), in one place.

Written by hand from small helpers, next to nothing else: when a handler
changes what it accepts or answers, this changes with it.
``tests/test_openapi.py`` checks live answers of every route against this
document, that every route of the app is in it, and runs property-based
requests (schemathesis) generated from it against the live app.

Each operation names the roles it admits in its description and in
``x-roles`` (``admin`` passes wherever a staff role does).
"""

from __future__ import annotations

import json
from functools import cache
from importlib import metadata
from typing import Any

from aiohttp import web

from billing.enums import (
    AccountType,
    LedgerKind,
    PrinterMode,
    PrintStatus,
    ReversalState,
    Role,
    StatusReason,
)
from proxy.logs import REQUEST_ID_HEADER
from proxy.pages.kinds import METHODS as COUNT_METHODS
from proxy.pipeline.delegation import MAX_COPIES, MAX_ENTRIES, MAX_VALUE_CHARS

from .auth import STAFF
from .delegations import MAX_VALID_MINUTES
from .queries import MAX_LIMIT

JSON = dict[str, Any]
MAX_ID = 2**63 - 1

# --- schema helpers ---------------------------------------------------------------


def ref(name: str) -> JSON:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: JSON) -> JSON:
    return {"anyOf": [schema, {"type": "null"}]}


def obj(properties: dict[str, JSON], *, optional: tuple[str, ...] = (), **extra: Any) -> JSON:
    """A closed object: every property required unless listed in ``optional``."""
    return {
        "type": "object",
        "properties": properties,
        "required": [name for name in properties if name not in optional],
        "additionalProperties": False,
        **extra,
    }


def page_of(item: str) -> JSON:
    return obj(
        {
            "items": {"type": "array", "items": ref(item)},
            "next_cursor": {
                "type": ["string", "null"],
                "description": "Pass as `cursor` for the next page; null on the last page.",
            },
        }
    )


STRING: JSON = {"type": "string"}
NULLABLE_STRING: JSON = {"type": ["string", "null"]}
INTEGER: JSON = {"type": "integer"}
ID: JSON = {"type": "integer", "minimum": 1, "maximum": MAX_ID}
TIME: JSON = {
    "type": "string",
    "format": "date-time",
    "description": "ISO 8601 UTC with microseconds, e.g. `2024-05-01T12:00:00.000000Z`.",
}
NULLABLE_TIME: JSON = nullable(ref("Time"))
AMOUNT: JSON = {
    "type": "string",
    "pattern": r"^-?[0-9]+(\.[0-9]+)?$",
    "description": "A decimal amount as a string (never a float), e.g. `1.20` or `-0.30`.",
}
ROLE_NAMES = [r.value for r in Role]

SCHEMAS: dict[str, JSON] = {
    "Error": obj(
        {
            "error": obj(
                {
                    "code": {
                        "type": "string",
                        "description": (
                            "Stable machine-readable code: bad-request, invalid-parameter, "
                            "bad-json, delegation-invalid, bad-card, invalid-input, "
                            "unauthorized, forbidden, not-found, conflict, "
                            "invalid-transition, method-not-allowed, too-large, internal..."
                        ),
                    },
                    "message": {"type": "string", "description": "For people; may change."},
                }
            )
        },
        description="Every error answer has this shape.",
    ),
    "Time": TIME,
    "Amount": AMOUNT,
    "Status": {
        "type": "string",
        "enum": [s.label for s in PrintStatus],
        "description": "pending → processing (held, stopped) → completed | canceled | aborted;"
        " pending_external: waiting for PaperCut's outcome.",
    },
    "Mode": {"type": "string", "enum": [m.value for m in PrinterMode]},
    "CountMethod": {
        "type": "string",
        "enum": list(COUNT_METHODS),
        "description": "pdf-page-tree: the PDF's page tree; dsc: PostScript DSC page "
        "comments; ghostscript: as Ghostscript rendered it; raster-headers: PWG/CUPS/Apple "
        "raster page headers; pclxl-operators: PCL XL EndPage operators; estimate: a guess "
        "(text lines, PCL form feeds, an image, a document Ghostscript could not read); "
        "empty: an empty file.",
    },
    "StatusReason": {
        "type": ["string", "null"],
        "description": "Why the job has its status: one of the examples, `"
        + StatusReason.DENIED.value
        + ":<PaperCut's denied reason>`, or the IPP job-state-reasons the target reported.",
        "examples": [r.value for r in StatusReason if r is not StatusReason.DENIED],
    },
    "AccountType": {"type": "string", "enum": [t.value for t in AccountType]},
    "Health": obj(
        {
            "status": {"type": "string", "enum": ["ok", "error"]},
            "database": {"type": "string", "enum": ["ok", "error"]},
        }
    ),
    "AccountRef": obj({"id": ID, "type": ref("AccountType"), "name": STRING}),
    "Reversal": obj(
        {
            "amount": {
                "allOf": [ref("Amount")],
                "description": "What reversals gave back (positive; 0.00: nothing).",
            },
            "status": {
                "type": "string",
                "enum": [r.value for r in ReversalState],
                "description": "none, partial (some of a print-out's transactions) or full.",
            },
        },
        description="How much was given back by compensating ledger entries.",
    ),
    "Transaction": obj(
        {
            "id": {**ID, "description": "Name it in a partial reversal."},
            "account": ref("AccountRef"),
            "weight": {"type": "integer", "minimum": 1},
            "amount": ref("Amount"),
            "status": ref("Status"),
            "reversed": ref("Reversal"),
        },
        description="One account's share of a print-out (0 until it is charged).",
    ),
    "Event": obj(
        {
            "at": ref("Time"),
            "actor": STRING,
            "from": NULLABLE_STRING,
            "to": NULLABLE_STRING,
            "reason": NULLABLE_STRING,
            "message": NULLABLE_STRING,
        }
    ),
    "PrintOut": obj(
        {
            "id": ID,
            "status": ref("Status"),
            "status_reason": ref("StatusReason"),
            "status_message": NULLABLE_STRING,
            "mode": ref("Mode"),
            "printer": {"type": "string", "description": "The proxy printer (CUPS queue)."},
            "target": {"type": "string", "description": "ipp://…, ipps://… or cups://QUEUE"},
            "delegate": {"type": "string", "description": "Who printed."},
            "title": STRING,
            "pages": {"type": "integer", "minimum": 0},
            "pages_estimated": {
                "type": "boolean",
                "description": "The page count is a guess (see count_method).",
            },
            "count_method": {
                "anyOf": [ref("CountMethod"), {"type": "null"}],
                "description": "How the pages were counted (null: before this was kept).",
            },
            "color_pages": {
                "anyOf": [{"type": "integer", "minimum": 0}, {"type": "null"}],
                "description": "Pages that carry colour, as Ghostscript measured them "
                "(null: not measured; a colour job is then colour on every page).",
            },
            "copies": {"type": "integer", "minimum": 1},
            "document_copies": {
                "type": "integer",
                "minimum": 1,
                "description": "Copies the document itself asks for (PostScript NumCopies); "
                "charged on top of copies.",
            },
            "printer_impressions": {
                "type": ["integer", "null"],
                "description": "job-impressions-completed as the printer reported it, all "
                "copies (null: not reported); charged when [charging] trust = printer.",
            },
            "cost": nullable(ref("Amount")),
            "currency": STRING,
            "ticket_number": NULLABLE_STRING,
            "created_at": ref("Time"),
            "ended_at": NULLABLE_TIME,
            "charged_at": NULLABLE_TIME,
            "reversed_at": NULLABLE_TIME,
            "reversed": ref("Reversal"),
            "transactions": {"type": "array", "items": ref("Transaction")},
            "events": {
                "type": "array",
                "items": ref("Event"),
                "description": "Only in the single print-out view, oldest first.",
            },
        },
        optional=("events",),
    ),
    "PrintOutPage": page_of("PrintOut"),
    "HeldJob": obj(
        {
            "id": ID,
            "printer": STRING,
            "delegate": STRING,
            "title": STRING,
            "pages": {"type": "integer", "minimum": 0},
            "copies": {"type": "integer", "minimum": 1},
            "mode": ref("Mode"),
            "status": ref("Status"),
            "status_reason": ref("StatusReason"),
            "status_message": NULLABLE_STRING,
            "created_at": ref("Time"),
            "hold_until": {
                "anyOf": [ref("Time"), {"type": "null"}],
                "description": "When an unreleased hold expires (null: no expiry).",
            },
        }
    ),
    "HeldJobPage": page_of("HeldJob"),
    "Ticket": obj(
        {
            "id": ID,
            "number": NULLABLE_STRING,
            "printer": STRING,
            "delegate": STRING,
            "title": STRING,
            "pages": {"type": "integer", "minimum": 0},
            "copies": {"type": "integer", "minimum": 1},
            "mode": ref("Mode"),
            "status": ref("Status"),
            "status_reason": ref("StatusReason"),
            "status_message": NULLABLE_STRING,
            "created_at": ref("Time"),
            "hold_until": nullable(ref("Time")),
            "cost": {
                "anyOf": [ref("Amount"), {"type": "null"}],
                "description": "The ticket cost, fixed when the job arrived.",
            },
            "currency": STRING,
            "cost_detail": {
                "type": ["array", "null"],
                "items": {"type": "object"},
                "description": "How the cost was made up (description, quantity, unit_price,"
                " amount).",
            },
        }
    ),
    "TicketPage": page_of("Ticket"),
    "Account": obj(
        {
            "id": ID,
            "type": ref("AccountType"),
            "name": {"type": "string", "description": "`Parent/Sub` for a shared sub-account."},
            "balance": ref("Amount"),
            "currency": STRING,
            "pages": {"type": "integer", "description": "Page counter (reversals subtract)."},
            "active": {"type": "boolean"},
            "credit_limit": {
                "anyOf": [ref("Amount"), {"type": "null"}],
                "description": "How far below zero the balance may go (10.00: down to"
                " -10.00); null: unlimited. A job that would pass it is held"
                " `insufficient-balance` (direct) or refused at release (hold, ticket).",
            },
            "deleted_at": NULLABLE_TIME,
            "access": {
                **obj(
                    {
                        "restricted": {"type": "boolean", "description": "false: open."},
                        "users": {"type": "array", "items": STRING},
                        "groups": {"type": "array", "items": STRING},
                    }
                ),
                "description": "Group and shared accounts, in the single-account views: who"
                " may charge it (open: anyone with the delegate right).",
            },
        },
        optional=("access",),
    ),
    "AccountPage": page_of("Account"),
    "AuditEvent": obj(
        {
            "id": ID,
            "at": ref("Time"),
            "actor": STRING,
            "subject_type": STRING,
            "subject_id": STRING,
            "from": NULLABLE_STRING,
            "to": NULLABLE_STRING,
            "reason": NULLABLE_STRING,
            "message": NULLABLE_STRING,
            "data": {"type": ["object", "null"], "description": "For edits: field -> [old, new]."},
        }
    ),
    "AuditEventPage": page_of("AuditEvent"),
    "Token": obj(
        {
            "id": ID,
            "role": {"type": "string", "enum": ROLE_NAMES},
            "user": NULLABLE_STRING,
            "label": NULLABLE_STRING,
            "state": {"type": "string", "enum": ["active", "expired", "revoked"]},
            "created_at": ref("Time"),
            "expires_at": NULLABLE_TIME,
            "revoked_at": NULLABLE_TIME,
        },
        description="An API token as listed: never its secret (only a hash is stored).",
    ),
    "TokenPage": page_of("Token"),
    "User": obj(
        {
            "id": ID,
            "name": STRING,
            "email": NULLABLE_STRING,
            "full_name": NULLABLE_STRING,
            "external_id": NULLABLE_STRING,
            "active": {"type": "boolean"},
            "delegate": {
                "type": "boolean",
                "description": "Her own delegate right (a group's may also give it).",
            },
            "groups": {"type": "array", "items": STRING},
            "created_at": ref("Time"),
            "deleted_at": NULLABLE_TIME,
        }
    ),
    "UserPage": page_of("User"),
    "UserPatch": obj(
        {
            "email": {"type": ["string", "null"], "maxLength": 320},
            "full_name": {"type": ["string", "null"], "maxLength": 255},
            "active": {
                "type": "boolean",
                "description": "false: her tokens answer 401 and her cards 404 at once.",
            },
            "delegate": {"type": "boolean", "description": "Grant or withdraw the delegate right."},
        },
        optional=("email", "full_name", "active", "delegate"),
    ),
    "Printer": obj(
        {
            "id": ID,
            "name": STRING,
            "mode": ref("Mode"),
            "target": STRING,
            "cost_mono": ref("Amount"),
            "cost_color": ref("Amount"),
            "duplex_discount": ref("Amount"),
            "media_costs": {"type": "object"},
            "papercut": {"type": "boolean"},
            "hold_expiry_mins": {"type": "integer", "minimum": 1},
            "enabled": {"type": "boolean"},
            "deleted_at": NULLABLE_TIME,
        }
    ),
    "PrinterPage": page_of("Printer"),
    "PrinterPatch": obj(
        {
            "target": {"type": "string", "pattern": "^(ipps?|cups)://", "maxLength": 1023},
            "mode": ref("Mode"),
            "cost_mono": {"type": "string", "pattern": r"^[0-9]{1,12}(\.[0-9]{1,6})?$"},
            "cost_color": {"type": "string", "pattern": r"^[0-9]{1,12}(\.[0-9]{1,6})?$"},
            "duplex_discount": {"type": "string", "pattern": r"^[0-9]{1,12}(\.[0-9]{1,6})?$"},
            "papercut": {"type": "boolean"},
            "hold_expiry_mins": {"type": "integer", "minimum": 1, "maximum": 43200},
            "enabled": {"type": "boolean", "description": "false: new jobs wait in CUPS."},
        },
        optional=(
            "target",
            "mode",
            "cost_mono",
            "cost_color",
            "duplex_discount",
            "media_costs",
            "papercut",
            "hold_expiry_mins",
            "enabled",
        ),
    ),
    "Group": obj(
        {
            "id": ID,
            "name": STRING,
            "external_id": NULLABLE_STRING,
            "active": {"type": "boolean"},
            "delegate": {"type": "boolean", "description": "Every member has the delegate right."},
            "members": {"type": "array", "items": STRING},
            "deleted_at": NULLABLE_TIME,
        }
    ),
    "GroupPage": page_of("Group"),
    "GroupPatch": obj(
        {
            "add_members": {"type": "array", "items": STRING, "maxItems": 1000},
            "remove_members": {"type": "array", "items": STRING, "maxItems": 1000},
            "active": {"type": "boolean"},
            "delegate": {
                "type": "boolean",
                "description": "Grant or withdraw the delegate right of every member.",
            },
        },
        optional=("add_members", "remove_members", "active", "delegate"),
    ),
    "CardPage": page_of("CardListed"),
    "CardListed": obj(
        {
            "id": ID,
            "card": STRING,
            "user": STRING,
            "deleted_at": NULLABLE_TIME,  # set once deleted (soft: the row stays)
        }
    ),
    "Reader": obj(
        {
            "reader_id": STRING,
            "printers": {"type": "array", "items": STRING},
            "card_format": {"type": "string", "enum": ["hex", "dec"]},
            "byte_order": {"type": "string", "enum": ["msb", "lsb"]},
            "enabled": {"type": "boolean"},
        }
    ),
    "ReaderPage": page_of("Reader"),
    "ReaderPatch": obj(
        {
            "printers": {
                "type": "array",
                "minItems": 1,
                "maxItems": 1000,
                "items": STRING,
                "description": "Replaces the printers it releases (hold mode, or --require-tap).",
            },
            "card_format": {"type": "string", "pattern": "^([hH][eE][xX]|[dD][eE][cC])$"},
            "byte_order": {"type": "string", "pattern": "^([mM][sS][bB]|[lL][sS][bB])$"},
            "enabled": {"type": "boolean", "description": "false: its token answers 401."},
        },
        optional=("printers", "card_format", "byte_order", "enabled"),
    ),
    "ReaderToken": obj(
        {
            "reader_id": STRING,
            "token": {"type": "string", "description": "Shown once; only its hash is kept."},
        }
    ),
    "AccountPatch": obj(
        {
            "credit_limit": {
                "anyOf": [
                    {"type": "string", "pattern": r"^[0-9]{1,12}(\.[0-9]{1,6})?$"},
                    {"type": "null"},
                ],
                "description": "A non-negative decimal string, or null for unlimited.",
            },
            "active": {"type": "boolean"},
            "access": {
                "anyOf": [
                    {
                        "type": "array",
                        "maxItems": 1000,
                        "items": {"type": "string", "minLength": 1, "maxLength": 256},
                    },
                    {"type": "null"},
                ],
                "description": "A group or shared account's access list, replaced: user names"
                " and `@group` (every member); null: open. A personal account has none (400).",
            },
        },
        optional=("credit_limit", "active", "access"),
    ),
    "AdjustmentRequest": obj(
        {
            "amount": {
                "type": "string",
                "pattern": r"^-?[0-9]{1,12}(\.[0-9]{1,2})?$",
                "not": {"pattern": r"^-?0+(\.0+)?$"},
                "description": "Signed: positive is a deposit, negative a debit; not zero.",
            },
            "reason": {"type": "string", "minLength": 1, "maxLength": 500, "pattern": r"\S"},
            "idempotency_key": {
                "type": "string",
                "minLength": 1,
                "maxLength": 150,
                "pattern": r"\S",
                "description": "The same key again is the same adjustment (200, no new entry).",
            },
        }
    ),
    "Adjustment": obj(
        {
            "entry": ref("LedgerEntry"),
            "created": {"type": "boolean", "description": "False: a replay of the same key."},
            "account": ref("Account"),
        }
    ),
    "LedgerEntry": obj(
        {
            "id": ID,
            "amount": {
                "allOf": [ref("Amount")],
                "description": "Signed: a charge is negative, a reversal positive.",
            },
            "kind": {"type": "string", "enum": [k.value for k in LedgerKind]},
            "pages": INTEGER,
            "print_out_id": {"type": ["integer", "null"]},
            "reverses_id": {"type": ["integer", "null"]},
            "reversed": {
                "allOf": [ref("Reversal")],
                "description": "A charge given back: the amount of the entry that compensates"
                " it (status full); else none.",
            },
            "created_at": ref("Time"),
            "comment": NULLABLE_STRING,
            "actor": STRING,
        }
    ),
    "LedgerPage": page_of("LedgerEntry"),
    "Reversed": obj(
        {
            "reversed": {
                "type": "integer",
                "minimum": 0,
                "description": "Compensating entries written (0: it was reversed before).",
            },
            "print_out": ref("PrintOut"),
        }
    ),
    "JobReleased": obj({"released": {"const": True}, "job": ref("HeldJob")}),
    "JobCanceled": obj({"canceled": {"const": True}, "job": ref("HeldJob")}),
    "JobRechecked": obj(
        {
            "rechecked": {"const": True},
            "fixed": {
                "type": "boolean",
                "description": "True: the job proceeds as its mode says. False: still held,"
                " the job's status_reason and status_message say what is missing now.",
            },
            "job": ref("HeldJob"),
        }
    ),
    "JobRedirected": obj(
        {
            "redirected": {"const": True},
            "new_print_out": {
                "type": "boolean",
                "description": "True: the job had ended aborted, a new print-out of it (its"
                " `reprint_of` names the aborted one) went to the printer; false: the same"
                " print-out moved.",
            },
            "job": ref("HeldJob"),
        }
    ),
    "DelegationReplaced": obj(
        {
            "replaced": {"const": True},
            "delegation": {
                "type": "object",
                "additionalProperties": {"type": "string"},
                "description": "The new delegation in its canonical option form.",
            },
            "job": ref("HeldJob"),
        }
    ),
    "JobDelegation": obj(
        {
            "delegators": ref("Delegators"),
            "delegator-groups": ref("Delegators"),
            "delegator-group-members": ref("Delegators"),
            "shared-accounts": ref("Delegators"),
        },
        optional=(
            "delegators",
            "delegator-groups",
            "delegator-group-members",
            "shared-accounts",
        ),
        anyOf=[
            {"required": ["delegators"]},
            {"required": ["delegator-groups"]},
            {"required": ["delegator-group-members"]},
            {"required": ["shared-accounts"]},
        ],
        description="The delegation keys of POST /delegations (no printer, delegate or"
        " validity: the job has them).",
    ),
    "TicketReleased": obj({"released": {"const": True}, "ticket": ref("Ticket")}),
    "TicketCanceled": obj({"canceled": {"const": True}, "ticket": ref("Ticket")}),
    "Delegators": {
        "description": "The option's string form (`alice,bob:2`: `:N` copies, default 1) or"
        " a list of `name[:N]` strings or `{name, copies}` objects.",
        "oneOf": [
            {"type": "string", "minLength": 1, "maxLength": MAX_VALUE_CHARS},
            {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_ENTRIES,
                "items": {
                    "oneOf": [
                        {"type": "string", "minLength": 1, "maxLength": MAX_VALUE_CHARS},
                        obj(
                            {
                                "name": {"type": "string", "minLength": 1, "maxLength": 255},
                                "copies": {
                                    "type": "integer",
                                    "minimum": 1,
                                    "maximum": MAX_COPIES,
                                    "default": 1,
                                },
                            },
                            optional=("copies",),
                        ),
                    ]
                },
            },
        ],
    },
    "DelegationRequest": obj(
        {
            "printer": {"type": "string", "minLength": 1, "description": "The proxy printer."},
            "delegate": {
                "type": "string",
                "minLength": 1,
                "description": "Whose next job this is; a `user` token may only name itself"
                " (and may leave it out).",
            },
            "valid_minutes": {
                "type": "integer",
                "minimum": 1,
                "maximum": MAX_VALID_MINUTES,
                "default": 60,
            },
            "delegators": ref("Delegators"),
            "delegator-groups": ref("Delegators"),
            "delegator-group-members": ref("Delegators"),
            "shared-accounts": ref("Delegators"),
        },
        optional=(
            "delegate",
            "valid_minutes",
            "delegators",
            "delegator-groups",
            "delegator-group-members",
            "shared-accounts",
        ),
        anyOf=[
            {"required": ["delegators"]},
            {"required": ["delegator-groups"]},
            {"required": ["delegator-group-members"]},
            {"required": ["shared-accounts"]},
        ],
    ),
    "Delegation": obj(
        {
            "id": ID,
            "delegate": STRING,
            "printer": STRING,
            "options": {
                "type": "object",
                "propertyNames": {
                    "enum": [
                        "delegators",
                        "delegator-groups",
                        "delegator-group-members",
                        "shared-accounts",
                    ]
                },
                "additionalProperties": {"type": "string"},
                "description": "The delegation in its canonical CUPS option form.",
            },
            "valid_from": ref("Time"),
            "valid_until": ref("Time"),
        }
    ),
    "CardRequest": obj(
        {
            "user": {"type": "string", "description": "The card's owner (an existing user)."},
            "card": {
                "type": "string",
                "minLength": 1,
                "maxLength": 64,
                "description": "Hex with or without separators, either case, or decimal"
                " (`format: dec`).",
            },
            "format": {
                "type": ["string", "null"],
                "pattern": "^([hH][eE][xX]|[dD][eE][cC])$",
                "description": "hex (default) or dec, any case.",
            },
            "byte_order": {
                "type": ["string", "null"],
                "pattern": "^([mM][sS][bB]|[lL][sS][bB])$",
                "description": "msb (default) or lsb, any case.",
            },
        },
        optional=("format", "byte_order"),
    ),
    "Card": obj(
        {
            "id": ID,
            "user": STRING,
            "card": {"type": "string", "description": "The stored form: lower-case hex, MSB."},
        }
    ),
    "TapRequest": obj({"card": {"type": "string", "description": "As the reader reads it."}}),
    "Released": obj(
        {
            "id": ID,
            "printer": STRING,
            "title": STRING,
            "pages": {"type": "integer", "minimum": 0},
            "copies": {"type": "integer", "minimum": 1},
        }
    ),
    "TapResult": obj(
        {
            "reader": STRING,
            "card": {"type": "string", "description": "The card number in its stored form."},
            "released": {"type": "array", "items": ref("Released")},
        }
    ),
    "ReverseRequest": obj(
        {
            "reason": {
                "type": "string",
                "minLength": 1,
                "maxLength": 500,
                "pattern": r"\S",
                "description": "Why (required): the compensating entries' comment and the event's.",
            },
            "transactions": {
                "type": "array",
                "minItems": 1,
                "maxItems": 1000,
                "items": ID,
                "description": "A partial reversal: only these transactions of the print-out"
                " (their ids in `transactions[].id`); left out: every transaction.",
            },
        },
        optional=("transactions",),
    ),
    "UsageTotals": obj(
        {
            "pages": {"type": "integer", "description": "Pages × copies (the page counter)."},
            "sheets": INTEGER,
            "color_pages": INTEGER,
            "mono_pages": INTEGER,
            "cost": ref("Amount"),
        }
    ),
    "UsageRow": obj(
        {
            "key": {
                "type": "string",
                "description": "The user (delegate), `type:name` of the account, the printer"
                " or the UTC date (`YYYY-MM-DD`).",
            },
            "account": obj({"type": ref("AccountType"), "name": STRING}),
            "pages": INTEGER,
            "sheets": INTEGER,
            "color_pages": INTEGER,
            "mono_pages": INTEGER,
            "cost": ref("Amount"),
        },
        optional=("account",),
    ),
    "UsageReport": obj(
        {
            "group_by": {"type": "string", "enum": ["user", "account", "printer", "day"]},
            "since": NULLABLE_TIME,
            "until": NULLABLE_TIME,
            "currency": STRING,
            "items": {"type": "array", "items": ref("UsageRow")},
            "totals": ref("UsageTotals"),
        }
    ),
    "EmptyBody": {
        "type": "object",
        "maxProperties": 0,
        "description": "No fields yet; an empty body is the same as `{}`.",
    },
    "TicketReleaseRequest": obj(
        {
            "printer": {
                "type": "string",
                "description": "Print on this proxy printer's target instead of the ticket's own.",
            }
        },
        optional=("printer",),
    ),
    "RedirectRequest": obj(
        {
            "printer": {
                "type": "string",
                "minLength": 1,
                "description": "The proxy printer to send the job to.",
            }
        }
    ),
}

# --- parameters and responses -----------------------------------------------------

_ERRORS = {
    400: "Bad input: a parameter, the JSON body or a field (nothing was changed).",
    401: "Missing, malformed, unknown or revoked token.",
    403: "The token's role may not do this.",
    404: "No such resource (or not the caller's to see).",
    409: "Not possible in the resource's current state.",
    413: "The request body is larger than 1 MiB.",
}


def _headers() -> JSON:
    return {REQUEST_ID_HEADER: {"$ref": "#/components/headers/RequestId"}}


def error(status: int, description: str | None = None) -> JSON:
    headers = _headers()
    if status == 401:
        headers["WWW-Authenticate"] = {"$ref": "#/components/headers/WWWAuthenticate"}
    return {
        "description": description or _ERRORS[status],
        "headers": headers,
        "content": {"application/json": {"schema": ref("Error")}},
    }


def ok(schema: str, description: str = "OK") -> JSON:
    return {
        "description": description,
        "headers": _headers(),
        "content": {"application/json": {"schema": ref(schema)}},
    }


def query(name: str, schema: JSON, description: str) -> JSON:
    return {
        "name": name,
        "in": "query",
        "required": False,
        # An empty value counts as absent: ``?user=&status=`` is a form left blank.
        "allowEmptyValue": True,
        "schema": schema,
        "description": description,
    }


def path_id(what: str) -> JSON:
    return {
        "name": "id",
        "in": "path",
        "required": True,
        "schema": ID,
        "description": f"The {what}'s id. Anything that cannot be an id is a 404.",
    }


LIMIT = query(
    "limit",
    {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": 50},
    "Page size.",
)
CURSOR = query(
    "cursor",
    {"type": "string", "pattern": "^[A-Za-z0-9_-]{4,200}$"},
    "Opaque: the `next_cursor` of the previous page of the same list.",
)
USER = query("user", STRING, "Only this delegate's jobs (a `user` token: only itself).")
PRINTER = query("printer", STRING, "Only this proxy printer's jobs.")
HISTORY_FILTERS = [
    USER,
    PRINTER,
    query(
        "status",
        {"type": "string", "enum": [s.label for s in PrintStatus]},
        "Only print-outs in this status.",
    ),
    query(
        "since",
        {"type": "string", "maxLength": 64},
        "ISO 8601 date or date-time (UTC when no offset), inclusive. In a query string send"
        " `Z` or `%2B01:00`, not `+01:00`.",
    ),
    query("until", {"type": "string", "maxLength": 64}, "Like since, exclusive."),
    query(
        "account",
        {"type": "string", "minLength": 1, "maxLength": 600},
        "Only print-outs with a transaction on this account: its id, `type:name`"
        " (`shared:Events/Gala`) or its name (ambiguous across types: 400).",
    ),
    query(
        "payer",
        {"type": "string", "minLength": 1, "maxLength": 255},
        "`me` (a token bound to a user) or a user name (staff): the print-outs charged to"
        " that user's personal account, whoever printed them (`role=payer`).",
    ),
    query(
        "role",
        {"type": "string", "enum": ["delegate", "payer", "any"]},
        "How `user` (a `user` token: herself) is involved: `delegate` (default: she"
        " printed it), `payer` (charged to her account), `any` (either).",
    ),
]


def body(schema: str, *, required: bool = True) -> JSON:
    return {
        "required": required,
        "content": {"application/json": {"schema": ref(schema)}},
    }


def operation(
    op_id: str,
    summary: str,
    roles: tuple[Role, ...] | None,
    responses: dict[int, JSON],
    *,
    description: str = "",
    parameters: list[JSON] | None = None,
    request_body: JSON | None = None,
    security: str | None = "apiToken",
    tag: str,
) -> JSON:
    """One operation; ``roles`` None: no API role (no token, or a reader's own token)."""
    text = description
    if roles is not None:
        if Role.ADMIN not in roles and any(r in STAFF for r in roles):
            roles = (*roles, Role.ADMIN)  # admin passes wherever a staff role does
        names = ", ".join(f"`{r.value}`" for r in roles)
        text = f"Roles: {names}.\n\n{description}".strip()
    out: JSON = {
        "operationId": op_id,
        "summary": summary,
        "description": text,
        "tags": [tag],
        "responses": {str(status): resp for status, resp in sorted(responses.items())},
    }
    if roles is not None:
        out["x-roles"] = [r.value for r in roles]
    out["security"] = [{security: []}] if security else []
    if parameters:
        out["parameters"] = parameters
    if request_body is not None:
        out["requestBody"] = request_body
    return out


READERS = (Role.ADMIN, Role.ACCOUNTS_EDITOR, Role.TICKET_OPERATOR, Role.USER)
OWN = "A `user` token sees only its own (another's is a 404)."


def _errors_get() -> dict[int, JSON]:
    return {400: error(400), 401: error(401), 403: error(403)}


def _errors_post() -> dict[int, JSON]:
    return {400: error(400), 401: error(401), 403: error(403), 413: error(413)}


def _service_paths(prefix: str) -> dict[str, JSON]:
    """The service: health, metrics and this document."""
    return {
        "/healthz": {
            "get": operation(
                "health",
                "Is the service up and its database reachable?",
                None,
                {200: ok("Health"), 503: ok("Health", "The database cannot be reached.")},
                description="No token. Answers within 5 s even when the database hangs.",
                security=None,
                tag="service",
            )
        },
        "/metrics": {
            "get": operation(
                "metrics",
                "Prometheus metrics (text exposition format 0.0.4)",
                (Role.READER, Role.ADMIN),
                {
                    200: {
                        "description": "Metrics; README.md lists them.",
                        "headers": _headers(),
                        "content": {"text/plain": {"schema": STRING}},
                    },
                    401: error(401),
                    403: error(403),
                },
                description="`reader` is the monitoring role: it may read this and nothing"
                " else. Counts are read from the database at scrape time.",
                tag="service",
            )
        },
        f"{prefix}/openapi.json": {
            "get": operation(
                "openapi",
                "This document",
                None,
                {
                    200: {
                        "description": "OpenAPI 3.1",
                        "headers": _headers(),
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
                description="No token.",
                security=None,
                tag="service",
            )
        },
    }


def _print_out_paths(prefix: str) -> dict[str, JSON]:
    """Print-out history, its CSV export and reversal."""
    return {
        f"{prefix}/printouts": {
            "get": operation(
                "listPrintOuts",
                "Print-out history, newest first (keyset pagination)",
                READERS,
                {200: ok("PrintOutPage"), **_errors_get()},
                description="A `user` token lists only its own print-outs; naming another"
                " user is a 403. Unknown or repeated parameters are a 400.",
                parameters=[*HISTORY_FILTERS, LIMIT, CURSOR],
                tag="print-outs",
            )
        },
        f"{prefix}/printouts.csv": {
            "get": operation(
                "exportPrintOuts",
                "Print-out history as CSV (RFC 4180), newest first, all pages",
                READERS,
                {
                    200: {
                        "description": "One header line, then one line per print-out;"
                        " transactions in one cell as `account:type:weight:amount` joined"
                        " by `;`. Text a spreadsheet would take for a formula starts with `'`.",
                        "headers": {
                            **_headers(),
                            "Content-Disposition": {
                                "description": 'attachment; filename="printouts.csv"',
                                "required": True,
                                "schema": STRING,
                            },
                        },
                        "content": {"text/csv": {"schema": STRING}},
                    },
                    **_errors_get(),
                },
                description="The list's filters and rules, without paging: streamed in"
                " batches. A failure after the first byte closes the connection before the"
                " end, so a cut-off export never looks complete.",
                parameters=HISTORY_FILTERS,
                tag="print-outs",
            )
        },
        f"{prefix}/printouts/{{id}}": {
            "get": operation(
                "getPrintOut",
                "One print-out with its transactions and events",
                READERS,
                {200: ok("PrintOut"), 401: error(401), 403: error(403), 404: error(404)},
                description=OWN,
                parameters=[path_id("print-out")],
                tag="print-outs",
            )
        },
        f"{prefix}/printouts/{{id}}/reverse": {
            "post": operation(
                "reversePrintOut",
                "Reverse the page counters and every cost transaction",
                (Role.ACCOUNTS_EDITOR,),
                {200: ok("Reversed"), **_errors_post(), 404: error(404), 409: error(409)},
                description="By compensating ledger entries, one per transaction, with the"
                " reason as their comment. `transactions` makes it partial: only those"
                " accounts' shares (each transaction then shows `reversed.status = full`, the"
                " print-out `partial`). Reversing again reverses nothing. 409 when the"
                " print-out was never charged; 400 for a transaction not its own, or"
                " without a `reason` (nothing is reversed).",
                parameters=[path_id("print-out")],
                request_body=body("ReverseRequest"),
                tag="print-outs",
            )
        },
    }


def _report_paths(prefix: str) -> dict[str, JSON]:
    """Reports read off the ledger."""
    window = [
        query(
            "since",
            {"type": "string", "maxLength": 64},
            "ISO 8601 date or date-time (UTC when no offset), inclusive: ledger entries from then.",
        ),
        query("until", {"type": "string", "maxLength": 64}, "Like since, exclusive."),
    ]
    return {
        f"{prefix}/reports/usage": {
            "get": operation(
                "usageReport",
                "Usage totals (pages, sheets, colour pages, cost) per user, account, printer"
                " or day",
                (Role.ACCOUNTS_EDITOR,),
                {200: ok("UsageReport"), **_errors_get()},
                description="Sums of the print-outs' ledger entries (charges, and reversals"
                " on the day they were made, negative) in `[since, until)`: an account's"
                " cost is what the ledger charged it net. `user` is who printed (the"
                " delegate), `account` who pays. Pages, sheets and colour pages count"
                " like the page counter (a print-out's pages × each transaction's"
                " weight). Deposits and adjustments are not usage.",
                parameters=[
                    {
                        "name": "group_by",
                        "in": "query",
                        "required": True,
                        "schema": {"type": "string", "enum": ["user", "account", "printer", "day"]},
                        "description": "How to group the totals.",
                    },
                    *window,
                ],
                tag="reports",
            )
        },
    }


def _job_paths(prefix: str) -> dict[str, JSON]:
    """Jobs: held ones listed and released; any job canceled or redirected."""
    return {
        f"{prefix}/jobs/held": {
            "get": operation(
                "listHeldJobs",
                "Held jobs (hold mode, or held for a reason), oldest first",
                (Role.ADMIN, Role.TICKET_OPERATOR, Role.USER),
                {200: ok("HeldJobPage"), **_errors_get()},
                description="Job tickets are under /tickets. A `user` token lists only its"
                " own held jobs; naming another user is a 403.",
                parameters=[USER, PRINTER, LIMIT, CURSOR],
                tag="jobs",
            )
        },
        f"{prefix}/jobs/{{id}}/release": {
            "post": operation(
                "releaseJob",
                "Web release of a held job",
                (Role.ADMIN, Role.USER),
                {200: ok("JobReleased"), **_errors_post(), 404: error(404), 409: error(409)},
                description=f"{OWN} 409: not held, held for an invalid delegation, or a job"
                " ticket (released by an operator).",
                parameters=[path_id("job")],
                request_body=body("EmptyBody", required=False),
                tag="jobs",
            )
        },
        f"{prefix}/jobs/{{id}}/cancel": {
            "post": operation(
                "cancelJob",
                "Cancel a job that has not ended (at its printer too); nothing is charged",
                (Role.ADMIN, Role.USER),
                {
                    200: ok("JobCanceled"),
                    **_errors_post(),
                    404: error(404),
                    409: error(409),
                    502: error(502, "The printer cannot be reached: nothing changed."),
                },
                description=f"{OWN} A held or pending job ends `canceled` at once; a"
                " dispatched one is canceled at its target first (Cancel-Job). Its spool file"
                " is removed; the events stay. 409: it has ended already, or the printer"
                " finished it before the cancel reached it (`already-ended`: the tracker"
                " records how). 502: the printer cannot be reached (nothing changed).",
                parameters=[path_id("job")],
                request_body=body("EmptyBody", required=False),
                tag="jobs",
            )
        },
        f"{prefix}/jobs/{{id}}/recheck": {
            "post": operation(
                "recheckJob",
                "Re-check the delegation of a job held for it, then proceed as its mode says",
                (Role.ADMIN, Role.USER),
                {
                    200: ok(
                        "JobRechecked",
                        "Re-checked. `fixed`: direct jobs go to the printer, hold jobs wait"
                        " for release, tickets for an operator. Not fixed: the job stays held"
                        " with the reason (`delegation-invalid`, `user-unknown`,"
                        " `delegation-forbidden`) and a message naming what is missing now.",
                    ),
                    **_errors_post(),
                    404: error(404),
                    409: error(409, "The job is not held for its delegation."),
                },
                description=f"{OWN} For a job held `delegation-invalid`, `user-unknown` or"
                " `delegation-forbidden`, after the missing user, group or account was added"
                " or the right granted. The job's own delegation (its options, or the"
                " registered delegation it consumed) is resolved again with the rights of"
                " today. An event records each re-check, fixed or not.",
                parameters=[path_id("job")],
                request_body=body("EmptyBody", required=False),
                tag="jobs",
            )
        },
        f"{prefix}/jobs/{{id}}/delegation": {
            "put": operation(
                "replaceJobDelegation",
                "Replace a held job's delegation, then proceed as its mode says",
                (Role.ADMIN,),
                {
                    200: ok("DelegationReplaced"),
                    **_errors_post(),
                    404: error(404),
                    409: error(409, "The job is not held (or was dispatched)."),
                },
                description="An admin decides who pays for a held job not yet dispatched"
                " (held for its delegation, for release or as a ticket). Names must exist"
                " (400 `delegation-invalid`, nothing changed); the delegate's rights are not"
                " checked. The shadow transactions and copies follow the new delegation; an"
                " event records the admin and the delegation.",
                parameters=[path_id("job")],
                request_body=body("JobDelegation"),
                tag="jobs",
            )
        },
        f"{prefix}/jobs/{{id}}/redirect": {
            "post": operation(
                "redirectJob",
                "Send a pending, held or not-printed aborted job to another proxy printer",
                (Role.ADMIN, Role.USER),
                {200: ok("JobRedirected"), **_errors_post(), 404: error(404), 409: error(409)},
                description=f"{OWN} A pending (not yet sent) or held job moves, as the same"
                " print-out, to the printer's target; that printer's mode applies (direct:"
                " sent at once; hold: held for a tap there) and its cost rules charge it."
                " One event, reason `redirected`. An aborted job that never printed gets a"
                " new print-out while its document is still kept. 404: no such job or"
                " printer; 409: dispatched, being sent right now, ended, a job ticket (see"
                " /tickets), to a ticket printer, or held for an invalid delegation.",
                parameters=[path_id("job")],
                request_body=body("RedirectRequest"),
                tag="jobs",
            )
        },
    }


def _nfc_paths(prefix: str) -> dict[str, JSON]:
    """NFC: the reader's tap and card registration."""
    return {
        f"{prefix}/readers/{{reader_id}}/tap": {
            "post": operation(
                "readerTap",
                "NFC tap: release every held job of the card's owner on the reader's printers",
                None,
                {
                    200: ok("TapResult"),
                    **_errors_post(),
                    403: error(403, "A valid token of another reader, or an unknown reader id."),
                    404: error(404, "Unknown card: nothing released (the tap is recorded)."),
                },
                description="Authenticated with the reader's own token (`proxyprint reader"
                " add` prints it), not an API token. The card is read with the reader's"
                " format and byte order. Every tap is an event, unknown and malformed cards"
                " included.",
                parameters=[
                    {
                        "name": "reader_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,64}$"},
                    }
                ],
                request_body=body("TapRequest"),
                security="readerToken",
                tag="nfc",
            )
        },
        f"{prefix}/cards": {
            "get": operation(
                "listCards",
                "Registered cards and their owners",
                (Role.ADMIN,),
                {200: ok("CardPage"), **_errors_get()},
                description="Numbers in their stored form (lower-case hex, MSB first). Live"
                " cards only unless `deleted=true`.",
                parameters=[
                    query("user", STRING, "Only this user's cards."),
                    query(
                        "deleted",
                        {"type": "boolean"},
                        "true: deleted cards too (marked by `deleted_at`).",
                    ),
                ],
                tag="nfc",
            ),
            "post": operation(
                "registerCard",
                "Register an NFC card for a user (a user may have several)",
                (Role.ADMIN,),
                {201: ok("Card", "Registered"), **_errors_post(), 404: error(404), 409: error(409)},
                description="404: unknown user. 409: the card is already registered.",
                request_body=body("CardRequest"),
                tag="nfc",
            ),
        },
    }


def _ticket_paths(prefix: str) -> dict[str, JSON]:
    """Job tickets for an operator."""
    return {
        f"{prefix}/tickets": {
            "get": operation(
                "listTickets",
                "Job tickets waiting for an operator, oldest first",
                (Role.TICKET_OPERATOR,),
                {200: ok("TicketPage"), **_errors_get()},
                parameters=[USER, PRINTER, LIMIT, CURSOR],
                tag="tickets",
            )
        },
        f"{prefix}/tickets/{{id}}/release": {
            "post": operation(
                "releaseTicket",
                "Release a job ticket, optionally to another proxy printer",
                (Role.TICKET_OPERATOR,),
                {200: ok("TicketReleased"), **_errors_post(), 404: error(404), 409: error(409)},
                description="It prints and is charged with its ticket cost, pro rata."
                " 404: no such ticket or printer; 409: not waiting any more.",
                parameters=[path_id("ticket")],
                request_body=body("TicketReleaseRequest", required=False),
                tag="tickets",
            )
        },
        f"{prefix}/tickets/{{id}}/cancel": {
            "post": operation(
                "cancelTicket",
                "Cancel a job ticket (removed: spool file deleted, event kept)",
                (Role.TICKET_OPERATOR, Role.USER),
                {200: ok("TicketCanceled"), **_errors_post(), 404: error(404), 409: error(409)},
                description="By an operator, or by the ticket's own delegate with a `user` token.",
                parameters=[path_id("ticket")],
                request_body=body("EmptyBody", required=False),
                tag="tickets",
            )
        },
    }


def _account_paths(prefix: str) -> dict[str, JSON]:
    """Accounts and their ledger."""
    return {
        f"{prefix}/accounts": {
            "get": operation(
                "listAccounts",
                "Accounts with their derived balances and page counters",
                READERS,
                {200: ok("AccountPage"), **_errors_get()},
                description="A `user` token sees only its personal account.",
                parameters=[
                    query(
                        "type",
                        {"type": "string", "enum": [t.value for t in AccountType]},
                        "Only accounts of this type.",
                    ),
                    LIMIT,
                    CURSOR,
                ],
                tag="accounts",
            )
        },
        f"{prefix}/accounts/{{id}}": {
            "get": operation(
                "getAccount",
                "One account with its balance, page counter and credit limit",
                READERS,
                {200: ok("Account"), **_errors_get(), 404: error(404)},
                description="A `user` token sees only its personal account.",
                parameters=[path_id("account")],
                tag="accounts",
            ),
            "patch": operation(
                "patchAccount",
                "Set an account's credit limit, or disable/enable it",
                (Role.ACCOUNTS_EDITOR,),
                {200: ok("Account"), **_errors_post(), 404: error(404)},
                description="Changes apply to jobs checked afterwards; an event records"
                " who changed what.",
                parameters=[path_id("account")],
                request_body=body("AccountPatch"),
                tag="accounts",
            ),
            "delete": operation(
                "deleteAccount",
                "Soft-delete a shared account (its ledger and history stay)",
                (Role.ADMIN,),
                {200: ok("Account"), **_errors_get(), 404: error(404)},
                description="Personal and group accounts go with their user or group (400).",
                parameters=[path_id("account")],
                tag="accounts",
            ),
        },
        f"{prefix}/accounts/{{id}}/adjustments": {
            "post": operation(
                "adjustAccount",
                "A deposit or a debit through the ledger",
                (Role.ACCOUNTS_EDITOR,),
                {
                    200: ok("Adjustment", "Already posted under this key"),
                    201: ok("Adjustment", "Posted"),
                    **_errors_post(),
                    404: error(404),
                    409: error(409, "The key was used for another amount or account."),
                },
                description="One ledger entry per `idempotency_key`; the reason is its comment.",
                parameters=[path_id("account")],
                request_body=body("AdjustmentRequest"),
                tag="accounts",
            )
        },
        f"{prefix}/accounts/{{id}}/transactions": {
            "get": operation(
                "accountLedger",
                "An account's ledger entries, newest first",
                READERS,
                {200: ok("LedgerPage"), **_errors_get(), 404: error(404)},
                description="A `user` token sees only its personal account's ledger.",
                parameters=[path_id("account"), LIMIT, CURSOR],
                tag="accounts",
            )
        },
    }


def _delegation_paths(prefix: str) -> dict[str, JSON]:
    """Delegations registered beforehand."""
    return {
        f"{prefix}/delegations": {
            "post": operation(
                "registerDelegation",
                "Register who pays for the delegate's next job on a printer",
                (Role.ADMIN, Role.USER),
                {201: ok("Delegation", "Registered"), **_errors_post(), 404: error(404)},
                description="For clients that cannot send job options (Windows, macOS,"
                " phones): applies to the delegate's next job on the printer within"
                " `valid_minutes`. Unknown users, groups or accounts are a 400"
                " (`delegation-invalid`); an unknown printer is a 404. The rights to charge"
                " apply (SPEC §3): a delegation the delegate may not make is a 403 with code"
                " `delegation-forbidden` (or `user-unknown`) and a message naming what is"
                " missing.",
                request_body=body("DelegationRequest"),
                tag="delegations",
            )
        },
    }


def path_name(what: str) -> JSON:
    return {
        "name": "name",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "minLength": 1, "maxLength": 255},
        "description": f"The {what}'s name.",
    }


ADMIN = (Role.ADMIN,)
READER_ID: JSON = {
    "name": "reader_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "minLength": 1, "maxLength": 64},
    "description": "The reader's id.",
}


def _admin_paths(prefix: str) -> dict[str, JSON]:
    """Administration (admin): the audit view, tokens, users, printers."""
    get_errors = {**_errors_get(), 404: error(404)}
    patch_errors = {**_errors_post(), 404: error(404)}
    return {
        f"{prefix}/events": {
            "get": operation(
                "listEvents",
                "The audit view: every event, newest first",
                ADMIN,
                {200: ok("AuditEventPage"), **_errors_get()},
                description="Every change (status, administration, money) is an event with"
                " its actor.",
                parameters=[
                    query("actor", STRING, "Only events by this actor (`api:admin:token-1`,"
                          " `cli:root`, a user name)."),
                    query("subject", STRING, "`TYPE` or `TYPE:ID`: `user:alice`,"
                          " `printer:pp-hold`, `print_out:12`, `account:3`, `token:2`."),
                    LIMIT,
                    {**CURSOR, "description": "The `next_cursor` of the previous page."},
                ],
                tag="administration",
            )
        },
        f"{prefix}/users": {
            "get": operation(
                "listUsers", "Users (deleted ones too, marked)", ADMIN,
                {200: ok("UserPage"), **_errors_get()},
                description="Every user with her groups.", tag="administration",
            )
        },
        f"{prefix}/users/{{name}}": {
            "get": operation(
                "getUser", "One user", ADMIN, {200: ok("User"), **get_errors},
                description="Deleted users too.", parameters=[path_name("user")],
                tag="administration",
            ),
            "patch": operation(
                "patchUser", "Edit, disable or enable a user", ADMIN,
                {200: ok("User"), **patch_errors},
                description="A disabled user's tokens answer 401 and her cards 404 at once.",
                parameters=[path_name("user")], request_body=body("UserPatch"),
                tag="administration",
            ),
            "delete": operation(
                "deleteUser", "Soft-delete a user (history and ledger kept)", ADMIN,
                {200: ok("User"), **get_errors},
                description="Her tokens and cards stop working; her name stays taken.",
                parameters=[path_name("user")], tag="administration",
            ),
        },
        f"{prefix}/printers": {
            "get": operation(
                "listPrinters", "Proxy printers and their settings", ADMIN,
                {200: ok("PrinterPage"), **_errors_get()},
                description="Deleted ones too, marked.", tag="administration",
            )
        },
        f"{prefix}/printers/{{name}}": {
            "get": operation(
                "getPrinter", "One proxy printer's settings", ADMIN,
                {200: ok("Printer"), **get_errors},
                description="Deleted ones too.", parameters=[path_name("printer")],
                tag="administration",
            ),
            "delete": operation(
                "deletePrinter", "Soft-delete a printer (history kept)", ADMIN,
                {200: ok("Printer"), **get_errors},
                description="The intake refuses its jobs (404) from now on; its print-outs"
                " and events stay. Its CUPS queue stays: remove it with `lpadmin -x NAME`.",
                parameters=[path_name("printer")], tag="administration",
            ),
            "patch": operation(
                "patchPrinter", "Change a printer's prices, mode, target, hold expiry", ADMIN,
                {200: ok("Printer"), **patch_errors},
                description="Applies to jobs received afterwards (a print-out keeps the"
                " settings it arrived under); an event records who changed what.",
                parameters=[path_name("printer")], request_body=body("PrinterPatch"),
                tag="administration",
            )
        },
        f"{prefix}/groups": {
            "get": operation(
                "listGroups", "Groups and their members", ADMIN,
                {200: ok("GroupPage"), **_errors_get()},
                description="Deleted ones too, marked.", tag="administration",
            )
        },
        f"{prefix}/groups/{{name}}": {
            "get": operation(
                "getGroup", "One group and its members", ADMIN,
                {200: ok("Group"), **get_errors},
                description="Deleted ones too.", parameters=[path_name("group")],
                tag="administration",
            ),
            "delete": operation(
                "deleteGroup", "Soft-delete a group (its account and history kept)", ADMIN,
                {200: ok("Group"), **get_errors},
                description="Its members are released; its account cannot be charged any more.",
                parameters=[path_name("group")], tag="administration",
            ),
            "patch": operation(
                "patchGroup", "Add or remove members; disable or enable a group", ADMIN,
                {200: ok("Group"), **patch_errors},
                description="A disabled group's account cannot be charged for new jobs.",
                parameters=[path_name("group")], request_body=body("GroupPatch"),
                tag="administration",
            )
        },
        f"{prefix}/readers": {
            "get": operation(
                "listReaders", "NFC readers and their printers (never their tokens)", ADMIN,
                {200: ok("ReaderPage"), **_errors_get()},
                description="Disabled readers' tokens answer 401.", tag="nfc",
            )
        },
        f"{prefix}/cards/{{card}}": {
            "delete": operation(
                "deleteCard", "Unregister an NFC card (soft delete, history kept)", ADMIN,
                {200: ok("CardListed"), **get_errors},
                description="The card releases nothing from now on (a tap: 404, and it is"
                " offered for self-association like any unknown card); its row and events"
                " stay. The number may be registered again, to anyone. 404: no live card"
                " has this number.",
                parameters=[
                    {"name": "card", "in": "path", "required": True,
                     "schema": {"type": "string", "minLength": 1, "maxLength": 64},
                     "description": "The card number in any form (hex with or without"
                     " separators, either case; decimal with `format=dec`)."},
                    query("format", {"type": "string", "enum": ["hex", "dec"]},
                          "How the number is written (default hex)."),
                    query("byte_order", {"type": "string", "enum": ["msb", "lsb"]},
                          "Its byte order (default msb)."),
                ],
                tag="nfc",
            )
        },
        f"{prefix}/readers/{{reader_id}}": {
            "get": operation(
                "getReader", "One NFC reader and its printers", ADMIN,
                {200: ok("Reader"), **get_errors},
                description="Never its token.", parameters=[READER_ID], tag="nfc",
            ),
            "patch": operation(
                "patchReader", "Re-map a reader's printers, its card format; disable it",
                ADMIN, {200: ok("Reader"), **patch_errors},
                description="Each change is an event with its actor.",
                parameters=[READER_ID], request_body=body("ReaderPatch"), tag="nfc",
            ),
            "delete": operation(
                "deleteReader", "Remove a reader (its token answers 401 at once)", ADMIN,
                {200: ok("Reader"), **get_errors},
                description="Its taps stay as events.", parameters=[READER_ID], tag="nfc",
            ),
        },
        f"{prefix}/readers/{{reader_id}}/rotate": {
            "post": operation(
                "rotateReader", "A new token for a reader; the old one stops working", ADMIN,
                {200: ok("ReaderToken"), **_errors_post(), 404: error(404)},
                description="HTTP and TCP readers alike.",
                parameters=[READER_ID],
                request_body=body("EmptyBody", required=False),
                tag="nfc",
            )
        },
        f"{prefix}/tokens": {
            "get": operation(
                "listTokens", "API tokens, never their secrets", ADMIN,
                {200: ok("TokenPage"), **_errors_get()},
                description="Active, expired and revoked.", tag="administration",
            )
        },
        f"{prefix}/tokens/{{id}}": {
            "delete": operation(
                "revokeToken", "Revoke a token: 401 from its next request on", ADMIN,
                {200: ok("Token"), **get_errors},
                description="Revoking twice is a no-op.", parameters=[path_id("token")],
                tag="administration",
            )
        },
    }  # fmt: skip


def _paths(prefix: str) -> dict[str, JSON]:
    """Every path, in the order the document lists them; one builder per resource."""
    return {
        **_service_paths(prefix),
        **_print_out_paths(prefix),
        **_job_paths(prefix),
        **_nfc_paths(prefix),
        **_ticket_paths(prefix),
        **_account_paths(prefix),
        **_delegation_paths(prefix),
        **_admin_paths(prefix),
        **_report_paths(prefix),
    }


def _version() -> str:
    try:
        return metadata.version("proxyprint")
    except metadata.PackageNotFoundError:
        return "0+unknown"


@cache
def document(prefix: str = "/api/v1") -> JSON:
    """The OpenAPI document (built once; callers must not modify it)."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "proxyprint",
            "version": _version(),
            "description": "Delegated print for CUPS: print-out history, held jobs, job"
            " tickets, NFC release, accounts and their ledger.\n\nAuthentication:"
            " `Authorization: Bearer TOKEN` (`proxyprint token create --role ROLE"
            " [--user NAME]`). Roles: "
            + ", ".join(f"`{r}`" for r in ROLE_NAMES)
            + ". `admin` passes wherever a staff role does; `user` sees and acts on its own"
            ' jobs only; `reader` may read /metrics only.\n\nErrors: `{"error": {"code":'
            ' ..., "message": ...}}` with a fitting status. Amounts are decimal strings,'
            ' times ISO 8601 UTC. Lists are `{"items": [...], "next_cursor": ...}`.'
            " Every answer carries `X-Request-Id` (the request's own, when sane).",
        },
        "paths": _paths(prefix),
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "apiToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API token: `proxyprint token create --role ROLE`.",
                },
                "readerToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An NFC reader's own token: `proxyprint reader add`.",
                },
            },
            "headers": {
                "RequestId": {
                    "description": "The request id: the client's `X-Request-Id` when it is"
                    " 1-64 characters of `[A-Za-z0-9._-]`, else a new one. Every log line"
                    " of the request carries it.",
                    "required": True,
                    "schema": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$"},
                },
                "WWWAuthenticate": {
                    "description": "The bearer challenge (RFC 6750).",
                    "required": True,
                    "schema": STRING,
                },
            },
        },
        "tags": [
            {"name": name}
            for name in (
                "print-outs",
                "jobs",
                "tickets",
                "accounts",
                "delegations",
                "nfc",
                "administration",
                "reports",
                "service",
            )
        ],
    }


@cache
def _encoded(prefix: str) -> bytes:
    return json.dumps(document(prefix), ensure_ascii=False, indent=1).encode()


def routes(prefix: str) -> list[web.RouteDef]:
    async def openapi_json(request: web.Request) -> web.Response:
        return web.Response(body=_encoded(prefix), content_type="application/json")

    return [web.get(f"{prefix}/openapi.json", openapi_json)]
