"""Third-party log lines a gridgen user cannot act on, dropped at their source.

On a CPU-only machine gridgen runs without torchvision on purpose (its wheel would pull a CUDA torch
of several GB). transformers then serves its PIL image processors, which are what gridgen uses, and
says so once per processor class on every run. The filter drops exactly those lines; every other
transformers message still shows.
"""

from __future__ import annotations

import logging

_TORCHVISION_FALLBACK = "requires torchvision (not installed); falling back to"
_SOURCE = "transformers.utils.import_utils"


class _DropTorchvisionFallback(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return _TORCHVISION_FALLBACK not in record.getMessage()


def quiet_torchvision_fallback() -> None:
    """Drop transformers' "falling back to the PIL image processor" notices (idempotent)."""
    logger = logging.getLogger(_SOURCE)
    if not any(isinstance(existing, _DropTorchvisionFallback) for existing in logger.filters):
        logger.addFilter(_DropTorchvisionFallback())
