"""The command line as a registry of command families: every subcommand keeps the options and defaults it had
(pinned in cli_options.txt, one line per option), defaults come from the config dataclasses, and building the
parser imports nothing heavy.

After adding or changing an option on purpose, rewrite the pinned list with
``.venv/bin/python tests/unit/test_cli_registry.py --write`` and review its diff."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from superserve.scheduler import paths
from superserve.scheduler.cli import build_parser, main, subcommand_parsers

PINNED = Path(__file__).with_name("cli_options.txt")
ROOT = str(paths.repo_root())


def option_lines() -> list[str]:
    """``<subcommand>  <option strings>  default=<repr>  type=<name>  [choices=...]  [required]  [action]``."""
    lines = []
    parsers = {"": build_parser()}
    parsers.update(subcommand_parsers(parsers[""]))
    for name, parser in parsers.items():
        for a in parser._actions:
            if isinstance(a, (argparse._SubParsersAction, argparse._HelpAction)):
                continue
            fields = [
                name or "superserve",
                "/".join(a.option_strings) or a.dest,
                f"default={a.default!r}".replace(ROOT, "<repo>"),  # the same in any checkout
                f"type={getattr(a.type, '__name__', a.type)}",
                type(a).__name__.strip("_"),
            ]
            if a.choices:
                fields.append(f"choices={list(a.choices)}")
            if a.required:
                fields.append("required")
            lines.append("  ".join(fields))
    return sorted(lines)


def test_every_subcommand_keeps_its_options_and_defaults():
    pinned = PINNED.read_text().splitlines()
    now = option_lines()
    gone, new = sorted(set(pinned) - set(now)), sorted(set(now) - set(pinned))
    assert not gone and not new, (
        f"options changed; if on purpose, run: python tests/unit/test_cli_registry.py --write\n"
        f"no longer there: {gone}\nnew: {new}"
    )


def test_subcommands_are_the_documented_ones():
    names = {n for n in subcommand_parsers(build_parser()) if " " not in n}
    assert names == {
        "triton",
        "demo",
        "serve",
        "train",
        "add-model",
        "import-ofa",
        "profile",
        "record",
        "plan",
        "simulate",
        "baselines",
        "trace",
        "bench",
        "bench-subnetact",
        "bench-decide",
        "bench-overhead",
        "bench-fault",
        "bench-soak",
        "bench-overload",
        "bench-fuzz",
        "bench-surge",
        "bench-sweep",
        "report",
    }


def test_every_subcommand_has_a_handler():
    for name, parser in subcommand_parsers(build_parser()).items():
        if not any(isinstance(a, argparse._SubParsersAction) for a in parser._actions):
            assert callable(parser.get_default("func")), f"superserve {name} has no handler"


def test_serve_defaults_are_the_config_dataclasses_defaults():
    """``superserve serve`` with no options builds exactly the default ServeConfig (engine, health and Triton
    ports included): the command line adds no default of its own."""
    from superserve.scheduler.sidecar.auth import AuthConfig, TlsConfig
    from superserve.scheduler.commands.serving import serve_config
    from superserve.scheduler.sidecar.limits import ConnectionLimits
    from superserve.scheduler.sidecar.server import ServeConfig

    args = build_parser().parse_args(["serve"])
    args.control_key = None
    assert serve_config(args, AuthConfig(), ConnectionLimits(), TlsConfig()) == ServeConfig()


@pytest.mark.parametrize(
    "command, option, config, field",
    [
        ("plan", "slo_ms", "superserve.scheduler.offline.planner:PlanConfig", "slo_ms"),
        ("plan", "margin_ms", "superserve.scheduler.offline.planner:PlanConfig", "margin_ms"),
        ("plan", "gears", "superserve.scheduler.offline.planner:PlanConfig", "n_gears"),
        ("simulate", "margin_ms", "superserve.scheduler.sidecar.engine:EngineConfig", "margin_ms"),
        ("simulate", "slo_ms", "superserve.scheduler.sidecar.engine:EngineConfig", "default_slo_ms"),
        ("triton", "grpc_port", "superserve.scheduler.sidecar.triton_launcher:TritonConfig", "grpc_port"),
        ("bench", "cv2", "superserve.client.bench:BenchConfig", "cv2"),
        ("bench-fault", "kill_every", "superserve.client.fault_bench:FaultConfig", "kill_every_s"),
        ("bench-soak", "duration", "superserve.client.soak_bench:SoakConfig", "duration_s"),
        ("bench-overload", "overload_x", "superserve.client.overload_bench:OverloadConfig", "overload_x"),
        ("bench-fuzz", "cases", "superserve.client.fuzz_bench:FuzzConfig", "cases"),
    ],
)
def test_defaults_follow_the_dataclass(monkeypatch, command, option, config, field):
    """Changing a dataclass default changes the command line's: the default is written once."""
    import dataclasses
    import importlib

    module, name = config.split(":")
    cls = getattr(importlib.import_module(module), name)
    default = {f.name: f for f in dataclasses.fields(cls)}[field].default
    assert getattr(build_parser().parse_args([command]), option) == default
    patched = dataclasses.make_dataclass(
        name,
        [(field, type(default), dataclasses.field(default=default + 1))],
        bases=(cls,),
        frozen=cls.__dataclass_params__.frozen,
    )
    monkeypatch.setattr(importlib.import_module(module), name, patched)
    assert getattr(build_parser().parse_args([command]), option) == default + 1


def test_building_the_parser_and_top_level_help_import_neither_torch_nor_tritonclient():
    code = (
        "import sys; from superserve.scheduler.cli import build_parser; build_parser().format_help(); "
        "build_parser().parse_args(['trace', 'poisson', '--rate-rps', '1', '--out', 'x']); "
        "print(sorted(m for m in ('torch', 'tritonclient') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"


def test_a_subcommand_help_lists_its_options(capsys):
    with pytest.raises(SystemExit) as e:
        main(["plan", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--margin-ms" in out and "--max-stages" in out


def test_an_unknown_option_is_refused_naming_it(capsys):
    with pytest.raises(SystemExit) as e:
        main(["serve", "--margin", "x"])
    assert e.value.code == 2
    assert "--margin" in capsys.readouterr().err


def test_serve_takes_the_policy_grammar_and_refuses_a_bad_name_before_starting_anything(capsys):
    from superserve.scheduler.sidecar.auth import AuthConfig, TlsConfig
    from superserve.scheduler.commands.serving import serve_config
    from superserve.scheduler.sidecar.limits import ConnectionLimits

    args = build_parser().parse_args(["serve", "--policy", "clipper:d1.1.1-w25.25.25"])
    args.control_key = None
    cfg = serve_config(args, AuthConfig(), ConnectionLimits(), TlsConfig())
    assert (cfg.policy, cfg.subnet) == ("clipper", "d1.1.1-w25.25.25")
    assert main(["serve", "--policy", "clipper:big", "--subnet", "small"]) == 2
    assert "--policy clipper:big names subnet 'big', --subnet another ('small')" in capsys.readouterr().err
    assert main(["serve", "--policy", "slackfit-classic"]) == 2
    assert "--policy: unknown policy 'slackfit-classic'" in capsys.readouterr().err


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit(__doc__)
    PINNED.write_text("\n".join(option_lines()) + "\n")
    print(f"wrote {PINNED}")
