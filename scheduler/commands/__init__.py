"""The command families of ``superserve``: one module each, registered in ``scheduler/cli.py``.

Each family module has ``add_parser(subparsers)``, which adds its subcommands with their help line and an
``arguments`` function; that function adds the subcommand's options and its handler (``func``) the first time
the subcommand is parsed or its help is shown (``cli.CommandParser``), so a command that imports torch or
tritonclient for its defaults costs nothing to the others. Defaults are read from the config dataclasses and
function signatures that use them (``default_of``), so each default is written once.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable


def default_of(fn: Callable[..., Any], name: str) -> Any:
    """The default of parameter ``name`` of ``fn`` (a function, or a dataclass for its field's default)."""
    default = inspect.signature(fn).parameters[name].default
    if default is inspect.Parameter.empty:
        raise TypeError(f"{getattr(fn, '__qualname__', fn)}: parameter {name!r} has no default")
    return default
