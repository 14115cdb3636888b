"""The CLI edge: a fast ``--help``, overrides checked before Hydra composes, one-line errors, and
an exit code that says how the run or sweep ended.

``-v``/``--verbose`` or ``HYDRA_FULL_ERROR=1`` shows full tracebacks instead. This module
imports nothing heavy (no torch, no Lightning) until a run actually starts.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from bench.errors import BenchError, ConfigError, UnknownOptionError, one_line
from bench.paths import conf_dir
from bench.toolkit import version_text

# config groups that are plumbing, not choices a user makes
HIDDEN_GROUPS = ("local",)


def config_groups(root: Path | None = None) -> dict[str, list[str]]:
    """``{group: [options]}`` for every config group folder (nested ones as ``hydra/launcher``);
    partials (``_common.yaml``) are not options."""
    root = root or conf_dir()
    groups: dict[str, list[str]] = {}
    for d in sorted(p for p in root.rglob("*") if p.is_dir() and "__pycache__" not in p.parts):
        options = sorted(f.stem for f in d.glob("*.yaml") if not f.stem.startswith("_"))
        if options:
            groups[d.relative_to(root).as_posix()] = options
    return groups


def help_text(root: Path | None = None) -> str:
    groups = config_groups(root)
    lines = [
        "usage: bench-train [-m] [-v] [key=value ...] [group=option ...]",
        "",
        "Compose data x model x task x trainer with Hydra and run it as a Lightning job;",
        "-m runs a sweep over comma-separated values (seed=0,1,2). Each run writes",
        "runs/<run_id>/record.json; bench-leaderboard and bench-report read them.",
        "",
        "config groups (group=option):",
    ]
    for group, options in groups.items():
        if group in HIDDEN_GROUPS:
            continue
        prefix = "+" if group == "combo" else ""
        lines.append(f"  {prefix}{group:<16} {', '.join(options)}")
    lines += [
        "",
        "examples:",
        "  bench-train data=pneumoniamnist model=paper_resnet18 experiment=medmnist_protocol",
        "  bench-train -m data=retinamnist model=bccnn,mobilenet seed=0,1,2",
        "  bench-train -m hparams_search=bccnn_lr data=pneumoniamnist model=bccnn",
        "",
        "other flags: -v (full tracebacks), --cfg job (print the composed config),",
        "             --hydra-help (Hydra's own help), --version,",
        "             -sc install=bash (tab completion of groups and keys in bash)",
    ]
    return "\n".join(lines)


def extra_config_dirs(args: list[str]) -> list[Path]:
    """Folders given with ``--config-dir``/``-cd`` (Hydra adds them to the search path)."""
    out = []
    for i, a in enumerate(args):
        if a in ("--config-dir", "-cd") and i + 1 < len(args):
            out.append(Path(args[i + 1]))
        elif a.startswith("--config-dir="):
            out.append(Path(a.split("=", 1)[1]))
    return out


def check_pack_sweep(overrides: list) -> None:
    """``seed=a,b,..`` with ``execution.pack_seeds=K``: each job trains seeds s..s+K-1, so a
    sweep names each pack's first seed; packs that overlap would train seeds nobody asked for."""
    pack = next((o for o in overrides if o.key_or_group == "execution.pack_seeds"), None)
    seed = next((o for o in overrides if o.key_or_group == "seed"), None)
    if pack is None or seed is None or pack.is_sweep_override() or not seed.is_sweep_override():
        return
    try:
        k = int(pack.value())
        seeds = sorted(int(s) for s in seed.sweep_string_iterator())
    except (TypeError, ValueError):
        return  # not numbers: the config's own checks say so
    if k > 1 and any(b - a < k for a, b in zip(seeds, seeds[1:], strict=False)):
        first = ",".join(str(s) for s in range(seeds[0], seeds[-1] + 1, k))
        raise ConfigError(
            f"seed={','.join(map(str, seeds))} with execution.pack_seeds={k}: each job trains "
            f"seeds s..s+{k - 1}, so packs overlap; sweep the first seed of each pack "
            f"(seed={first})"
        )


def precheck_overrides(args: list[str], root: Path | None = None) -> None:
    """Parse ``key=value`` overrides and check group options exist, before Hydra composes."""
    from hydra.core.override_parser.overrides_parser import OverridesParser  # after --help
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    groups = config_groups(root)
    for extra in extra_config_dirs(args):
        if extra.is_dir():
            for group, options in config_groups(extra).items():
                groups[group] = sorted({*groups.get(group, []), *options})
    skip = {args[i + 1] for i, a in enumerate(args[:-1]) if a in ("--config-dir", "-cd")}
    parsed = []
    for arg in args:
        if arg.startswith("-") or "=" not in arg or arg in skip:
            continue
        try:
            (ov,) = parser.parse_overrides([arg])
        except HydraException as e:
            msg = str(e).strip().splitlines()[0]
            raise ConfigError(
                f"cannot parse override {arg!r} ({msg}); write key=value, and a,b,c for sweeps "
                "with -m; quote values with spaces"
            ) from None
        parsed.append(ov)
        group = ov.key_or_group
        # hydra/* groups also hold plugin configs (joblib, submitit_*): Hydra checks those
        if group not in groups or ov.is_delete() or group.startswith("hydra/"):
            continue
        if ov.is_sweep_override():
            values = list(ov.sweep_string_iterator())
        else:
            value = ov.value()
            values = [str(v) for v in value] if isinstance(value, list) else [value]
        for value in values:
            if value is None or str(value) == "null":
                continue
            if str(value) not in groups[group]:
                raise UnknownOptionError(
                    f"{group}={value} is not a config in conf/{group}/; valid options: "
                    f"{', '.join(groups[group])}"
                )
    check_pack_sweep(parsed)


def _exit_code(outcome: dict | None) -> int:
    """0 when everything finished; the number of failed runs (max 125) otherwise."""
    if not outcome:
        return 0
    if outcome.get("kind") == "sweep":
        print(
            f"sweep finished: {outcome['total']} jobs, {outcome['done']} done, "
            f"{outcome['failed']} failed, {outcome['skipped']} skipped, "
            f"{outcome['interrupted']} interrupted",
            file=sys.stderr,
        )
        return min(int(outcome.get("failed", 0)), 125)
    if outcome.get("status") == "failed":
        if outcome.get("record_path") is None:  # stopped before the run started
            print(f"error: {outcome.get('error')}", file=sys.stderr)
        else:
            print(f"error: run {outcome['run_id']} failed: {outcome.get('error')}", file=sys.stderr)
        return int(outcome.get("exit_code") or 1)
    return 0


def train_cli() -> None:
    """Console script ``bench-train``: fast help, one-line errors, exit code = failed runs."""
    argv = sys.argv[1:]
    if any(a in ("-h", "--help") for a in argv):
        print(help_text())
        return
    if "--version" in argv:
        print(version_text("bench-train"))
        return
    verbose = any(a in ("-v", "--verbose") for a in argv)
    sys.argv = [sys.argv[0], *[a for a in argv if a not in ("-v", "--verbose")]]
    full = verbose or os.environ.get("HYDRA_FULL_ERROR") == "1"
    # Hydra re-raises instead of printing its own multi-line text: the errors below are ours
    os.environ["HYDRA_FULL_ERROR"] = "1"
    fd, outcome_file = tempfile.mkstemp(prefix="medbench-outcome-", suffix=".json")
    os.close(fd)
    os.environ["MEDBENCH_OUTCOME_FILE"] = outcome_file
    try:
        try:
            precheck_overrides(sys.argv[1:])
            from bench.hydra_main import main  # here, not at the top: --help needs no torch

            main()
        except BenchError as e:
            if full:
                raise
            print(f"error: {one_line(e)}", file=sys.stderr)
            sys.exit(e.exit_code)
        except Exception as e:
            from bench.job.instantiate import composition_error  # not on the --help path

            mistake = composition_error(e)
            if full or mistake is None:
                if not full:  # a crash of ours: one line, the traceback with -v
                    print(
                        f"error: {one_line(e)} (rerun with -v for the traceback)", file=sys.stderr
                    )
                    sys.exit(1)
                raise
            print(f"error: {one_line(mistake)}", file=sys.stderr)
            sys.exit(mistake.exit_code)
        from bench.sweep import read_outcome  # imports Hydra's callback API: after --help

        code = _exit_code(read_outcome(outcome_file))
    finally:
        Path(outcome_file).unlink(missing_ok=True)
    if code:
        sys.exit(code)
