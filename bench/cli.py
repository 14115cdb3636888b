"""The CLI edge: catch user mistakes early and print them as one line.

``-v``/``--verbose`` or ``HYDRA_FULL_ERROR=1`` shows full tracebacks instead.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from bench.errors import BenchError, ConfigError, UnknownOptionError, one_line

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


def config_groups(conf_dir: Path = CONF_DIR) -> dict[str, list[str]]:
    """``{group: [options]}`` for every config group folder (nested ones as ``hydra/launcher``)."""
    groups: dict[str, list[str]] = {}
    for d in sorted(p for p in conf_dir.rglob("*") if p.is_dir()):
        options = sorted(f.stem for f in d.glob("*.yaml") if not f.stem.startswith("_"))
        if options:
            groups[d.relative_to(conf_dir).as_posix()] = options
    return groups


def precheck_overrides(args: list[str], conf_dir: Path = CONF_DIR) -> None:
    """Parse ``key=value`` overrides and check group options exist, before Hydra composes."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    groups = config_groups(conf_dir)
    for arg in args:
        if arg.startswith("-") or "=" not in arg:
            continue
        try:
            (ov,) = parser.parse_overrides([arg])
        except HydraException as e:
            msg = str(e).strip().splitlines()[0]
            raise ConfigError(
                f"cannot parse override {arg!r} ({msg}); write key=value, and a,b,c for sweeps "
                "with -m; quote values with spaces"
            ) from None
        group = ov.key_or_group
        # hydra/* groups also hold plugin configs (joblib, submitit_*): Hydra checks those
        if group not in groups or ov.is_delete() or group.startswith("hydra/"):
            continue
        values = list(ov.sweep_string_iterator()) if ov.is_sweep_override() else [ov.value()]
        for value in values:
            if value is None or str(value) == "null":
                continue
            if str(value) not in groups[group]:
                raise UnknownOptionError(
                    f"{group}={value} is not a config in conf/{group}/; valid options: "
                    f"{', '.join(groups[group])}"
                )


def exit_code_of(fn: Callable[[], int]) -> int:
    """Run a command body; a :class:`BenchError` becomes one ``error:`` line and its exit code."""
    try:
        return fn()
    except BenchError as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return e.exit_code


def run_cli(
    hydra_main: Callable[[], None],
    last_run: Callable[[], dict | None],
    last_summary: Callable[[], object | None],
) -> None:
    """Run a Hydra main with one-line errors; exit with the number of failed runs (max 125)."""
    argv = sys.argv[1:]
    verbose = any(a in ("-v", "--verbose") for a in argv)
    sys.argv = [sys.argv[0], *[a for a in argv if a not in ("-v", "--verbose")]]
    full = verbose or os.environ.get("HYDRA_FULL_ERROR") == "1"
    if verbose:
        os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        precheck_overrides(sys.argv[1:])
        hydra_main()
    except BenchError as e:
        if full:
            raise
        print(f"error: {one_line(e)}", file=sys.stderr)
        sys.exit(e.exit_code)
    summary = last_summary()
    if summary is not None:
        failed = getattr(summary, "failed", 0)
        print(summary.line(), file=sys.stderr)
        if failed:
            sys.exit(min(int(failed), 125))
        return
    run = last_run()
    if run and run.get("status") == "failed":
        print(f"error: run {run['run_id']} failed: {run.get('error')}", file=sys.stderr)
        sys.exit(1)


logging.getLogger("bench").setLevel(logging.INFO)
