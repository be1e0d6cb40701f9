"""`inference_mode`: torch's inference mode as a decorator that imports torch only when the function runs, so a
module whose rendering code needs it still imports without torch (validation reads configs only)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

Function = TypeVar("Function", bound=Callable)


def inference_mode(function: Function) -> Function:
    @functools.wraps(function)
    def run(*args, **kwargs):
        import torch

        with torch.inference_mode():
            return function(*args, **kwargs)

    return run
