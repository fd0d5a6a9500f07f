"""Optional competitors: imported by name, so a missing one is a skip line, not a crash.

Every third-party library is reached through :func:`optional`, which returns the module or
``None`` and remembers why it is missing. Modules come back typed as ``Any``: the benchmarks
call the competitors' own entry points exactly as their users do, and their typing is theirs.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import platform
import sys
from typing import Any, Final

__all__ = ["DISTRIBUTIONS", "missing", "optional", "require", "versions"]

# Import name -> distribution name, for versions and skip messages.
DISTRIBUTIONS: Final = {
    "asyncclient": "asyncclient",
    "msgspec": "msgspec",
    "aiohttp": "aiohttp",
    "orjson": "orjson",
    "openai": "openai",
    "orq_ai_sdk": "orq-ai-sdk",
    "httpx": "httpx",
    "httpx_sse": "httpx-sse",
    "pydantic": "pydantic",
    "matplotlib": "matplotlib",
    "psutil": "psutil",
}

_missing: dict[str, str] = {}


class Missing(Exception):
    """A competitor cannot run here; the message says why (shown as a skip line)."""


def optional(name: str) -> Any:
    """The module ``name``, or ``None`` if it cannot be imported here."""
    try:
        return importlib.import_module(name)
    except Exception as exc:  # ImportError, or a broken install raising something else
        top = name.partition(".")[0]
        distribution = DISTRIBUTIONS.get(top, top)
        _missing[top] = f"{distribution} is not installed ({type(exc).__name__})"
        return None


def require(name: str) -> Any:
    """The module ``name``, or :class:`Missing` with a skip reason."""
    module = optional(name)
    if module is None:
        top = name.partition(".")[0]
        raise Missing(_missing.get(top, f"{name} is not installed"))
    return module


def missing() -> dict[str, str]:
    return dict(_missing)


def versions() -> dict[str, str]:
    found = {"python": f"{platform.python_version()} ({platform.python_implementation()})"}
    for top, distribution in DISTRIBUTIONS.items():
        try:
            found[distribution] = importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            if top == "asyncclient" and "asyncclient" in sys.modules:
                found[distribution] = getattr(sys.modules["asyncclient"], "__version__", "?")
            else:
                found[distribution] = "not installed"
    return found
