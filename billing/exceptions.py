"""One exception tree for the billing package."""


class BillingError(Exception):
    """Base of every error raised by billing."""


class InvalidInput(BillingError, ValueError):
    """Input that can never be valid (bad number, negative weight, ...)."""


class InvalidAmount(InvalidInput):
    """An amount that is not a finite decimal, or has the wrong sign."""


class InvalidWeights(InvalidInput):
    """Pro-rata weights that are empty, non-integer or not positive."""


class CurrencyError(InvalidInput):
    """Unknown currency code or unsupported number of decimals."""


class LedgerError(BillingError):
    """A ledger operation that cannot be carried out."""


class NotFound(BillingError, LookupError):
    """A named user, group, account or printer does not exist."""


class Conflict(BillingError):
    """The operation clashes with existing state (duplicate name, ...)."""


class InvalidTransition(BillingError):
    """A status change that the state machine does not allow."""
