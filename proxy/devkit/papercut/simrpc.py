"""The PaperCut simulator's XML-RPC face: which calls it takes and how it answers.

``METHODS`` lists the Web Services methods the simulator answers, with
PaperCut's argument types and orders (after the auth token), each mapped to
its ``SimMethods`` data operation. ``refusal`` is the fault for a call
PaperCut refuses before doing anything (an unknown method, a bad token,
arguments that match no signature); ``apply`` makes the call and answers
its result, or its ``SimFault``, as an XML-RPC method response.

Signatures are matched as PaperCut's server (Apache XML-RPC over Java
methods) matches them: every declared argument must be there (an argument
the documentation calls optional is sent blank, ""), a ``double`` takes
only an XML-RPC ``<double>`` (an ``<int>`` matches no method), an ``int``
only an ``<int>``/``<i4>``, and ``<nil/>`` (an extension PaperCut does not
enable) matches nothing. ``tests/test_papercut_fidelity.py`` holds this to
an independent client.
"""

from __future__ import annotations

import xmlrpc.client
from collections.abc import Callable
from typing import Any

from proxy.devkit.papercut.simmethods import SimMethods
from proxy.devkit.papercut.simstore import SimFault

__all__ = ["DOUBLE", "FAULT_PARSE", "METHODS", "apply", "fault", "refusal"]

FAULT_PARSE = -32700
FAULT_NO_METHOD = -32601
FAULT_PARAMS = -32602


class _Double:
    """Marker for an XML-RPC double argument (Java ``double``)."""


DOUBLE = _Double()
Spec = tuple[str, tuple[object, ...], int]  # (SimMethods method, argument types, required)

# The Web Services methods the simulator answers, with PaperCut's argument orders
# (after the auth token).
METHODS: dict[str, Spec] = {
    "api.isUserExists": ("is_user_exists", (str,), 1),
    "api.getUserAccountBalance": ("get_user_account_balance", (str, str), 2),
    "api.adjustUserAccountBalance": ("adjust_user_account_balance", (str, DOUBLE, str, str), 4),
    "api.getUserProperty": ("get_user_property", (str, str), 2),
    "api.getUserProperties": ("get_user_properties", (str, list), 2),
    "api.setUserProperty": ("set_user_property", (str, str, str), 3),
    "api.setUserProperties": ("set_user_properties", (str, list), 2),
    "api.listUserAccounts": ("list_user_accounts", (int, int), 2),
    "api.addNewInternalUser": ("add_new_internal_user", (str, str, str, str, str, str), 6),
    "api.deleteExistingUser": ("delete_existing_user", (str, bool), 2),
    "api.lookUpUserNameByCardNo": ("look_up_user_name_by_card_no", (str,), 1),
    "api.isGroupExists": ("is_group_exists", (str,), 1),
    "api.addNewGroup": ("add_new_group", (str,), 1),
    "api.listUserGroups": ("list_user_groups", (int, int), 2),
    "api.getGroupMembers": ("get_group_members", (str, int, int), 3),
    "api.getUserGroups": ("get_user_groups", (str,), 1),
    "api.addUserToGroup": ("add_user_to_group", (str, str), 2),
    "api.removeUserFromGroup": ("remove_user_from_group", (str, str), 2),
    "api.isSharedAccountExists": ("is_shared_account_exists", (str,), 1),
    "api.addNewSharedAccount": ("add_new_shared_account", (str,), 1),
    "api.adjustSharedAccountAccountBalance": (
        "adjust_shared_account_account_balance",
        (str, DOUBLE, str),
        3,
    ),
    "api.listPrinters": ("list_printers", (int, int), 2),
    "api.getPrinterProperty": ("get_printer_property", (str, str, str), 3),
    "api.setPrinterProperty": ("set_printer_property", (str, str, str, str), 4),
    "api.getPrinterCostSimple": ("get_printer_cost_simple", (str, str), 2),
    "api.setPrinterCostSimple": ("set_printer_cost_simple", (str, str, DOUBLE), 3),
    "api.performUserAndGroupSync": ("perform_user_and_group_sync", (), 0),
    "api.performGroupSync": ("perform_group_sync", (), 0),
    "api.getTaskStatus": ("get_task_status", (), 0),
}


def _matches(value: object, kind: object) -> bool:
    if kind is DOUBLE:
        return isinstance(value, float)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    assert isinstance(kind, type)
    return isinstance(value, kind)


def fault(code: int, message: str) -> bytes:
    return xmlrpc.client.dumps(xmlrpc.client.Fault(code, message), methodresponse=True).encode()


def refusal(method: str, params: tuple[object, ...], token: str) -> bytes | None:
    """The fault for a call refused before anything is applied; None for a good call."""
    spec = METHODS.get(method)
    if spec is None:
        return fault(FAULT_NO_METHOD, f"No such handler: {method}")
    if not params or params[0] != token:
        return fault(1, "Invalid authentication token")
    _, kinds, required = spec
    args = params[1:]
    if not required <= len(args) <= len(kinds) or not all(
        _matches(v, k) for v, k in zip(args, kinds, strict=False)
    ):
        return fault(FAULT_PARAMS, f"No method matching arguments for {method}")
    return None


def apply(db: SimMethods, method: str, args: tuple[object, ...]) -> bytes:
    """Call ``method`` (which ``refusal`` let through) on ``db`` with ``args``; the answer."""
    handler: Callable[..., Any] = getattr(db, METHODS[method][0])
    try:
        db.settle_tasks()  # background tasks whose time has come finish first
        result = handler(*args)
    except SimFault as exc:
        return fault(exc.code, exc.message)
    return xmlrpc.client.dumps((result,), methodresponse=True, allow_none=False).encode()
