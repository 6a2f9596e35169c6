"""Tunables the counters read at run time (tests shrink them)."""

CHUNK = 1 << 20
"""Bytes read at a time while streaming."""
SNIFF_BYTES = 64 * 1024
"""Bytes looked at to detect the format."""
MAX_OPS = 20_000_000
"""Work budget for the byte-level walks (compressed raster, PCL): past it the
count is extrapolated from the part walked, so a hostile file cannot keep a
worker busy for minutes."""
GS_TIMEOUT = 60.0
"""Seconds Ghostscript may take on one document at the intake (``ghostscript.analyse``);
past it the process group is killed and the cheap count stays."""
