"""The one command line, ``superserve <subcommand>``: the registry of command families and the dispatch.

Each family module registers its own subcommands and their options (``add_parser(subparsers)``); this file
only lists the families, parses, configures logging and calls the chosen subcommand's handler. A new
subcommand goes into its family's module (or a new module added to ``FAMILIES`` with one line)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any, Callable, Sequence

from superserve.client import sweep, sweep_report, traces
from superserve.scheduler.sidecar import log_limits
from superserve.scheduler.commands import benches, offline, serving

FAMILIES: tuple[Callable[[Any], None], ...] = (
    serving.add_parser,  # triton, demo, serve (scheduler/commands/serving.py)
    offline.add_parser,  # train, add-model, import-ofa, profile, record, plan, simulate, baselines
    traces.add_parser,  # trace {poisson,bursty,ramp,azure} ... --out FILE (client/traces.py)
    benches.add_parser,  # bench, bench-subnetact, bench-decide, bench-overhead, bench-fault, -soak, -overload, -fuzz
    sweep.add_parser,  # bench-sweep (client/sweep.py, issue 16)
    sweep_report.add_parser,  # report (client/sweep_report.py)
)
"""Every command family, in the order ``superserve --help`` lists them."""


class CommandParser(argparse.ArgumentParser):
    """A subcommand's parser whose options are added by its ``arguments`` function the first time it parses or
    shows help: a family may read its defaults from modules that import torch or tritonclient, and only the
    subcommand that runs pays for them (``superserve --help`` and ``superserve trace`` import neither; tested in
    tests/unit/test_cli_registry.py)."""

    def __init__(
        self, *args: Any, arguments: Callable[[argparse.ArgumentParser], None] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self._arguments = arguments

    def complete(self) -> CommandParser:
        """Add the options now, once (also what a test calls to see every subcommand's options)."""
        if self._arguments is not None:
            add, self._arguments = self._arguments, None
            add(self)
        return self

    def parse_known_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> Any:  # type: ignore[override]
        self.complete()
        return super().parse_known_args(args, namespace)

    def format_usage(self) -> str:
        self.complete()
        return super().format_usage()

    def format_help(self) -> str:
        self.complete()
        return super().format_help()


class _Subcommands(argparse._SubParsersAction):  # type: ignore[type-arg]
    """Completes the chosen subcommand's parser before argparse hands it the rest of the command line (whichever
    of its parse methods a Python version's argparse calls)."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        chosen = self._name_parser_map.get(values[0]) if values else None
        if isinstance(chosen, CommandParser):
            chosen.complete()
        super().__call__(parser, namespace, values, option_string)


def build_parser() -> argparse.ArgumentParser:
    p = CommandParser(
        prog="superserve",
        description="SuperServe on Triton: one weight-shared supernet served per "
        "request's latency target; train, profile, plan, simulate, serve and benchmark it.",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True, action=_Subcommands, parser_class=CommandParser)
    for add_family in FAMILIES:
        add_family(sub)
    return p


def subcommand_parsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """Every subcommand's parser, options added, by name (nested ones as ``"trace bursty"``)."""
    out: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                if isinstance(sub, CommandParser):
                    sub.complete()
                out[name] = sub
                out.update({f"{name} {k}": v for k, v in subcommand_parsers(sub).items()})
    return out


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # The secret for Triton's restricted APIs (model control, shared memory, trace, logging): shared by
    # `superserve triton` and `superserve serve --worker` through the environment, never a flag (flags
    # show in ps). Unset: each launched Triton gets a fresh random one.
    args.control_key = os.environ.get("SUPERSERVE_TRITON_CONTROL_KEY") or None
    args.token_env = os.environ.get("SUPERSERVE_TOKEN")  # serve's bearer token, likewise never a flag
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    limiter = log_limits.install()  # at most 10 records per call site per 10 s (DEBUG exempt)
    try:
        rc: int = args.func(args)
        return rc
    finally:
        limiter.report()


if __name__ == "__main__":
    sys.exit(main())
