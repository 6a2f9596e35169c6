"""The PaperCut simulator: XML-RPC API, print log, CUPS backend (dev and tests only)."""
