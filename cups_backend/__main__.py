"""``python -m cups_backend``: run the CUPS backend (see cups_backend.proxyprint)."""

import sys

from cups_backend.proxyprint import main

sys.exit(main())
