"""subpixel: a super-resolution inference service (ESPCN and the classical resamplers)."""

from __future__ import annotations

__version__ = "0.1.0"
