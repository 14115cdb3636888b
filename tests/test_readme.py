"""The README's commands stay true: every `bench-train` command composes, every other `bench-*`
command exists and takes the flags the README gives it."""

from __future__ import annotations

import re
import shlex
import subprocess
from importlib.metadata import entry_points

import pytest

from bench.job.instantiate import compose_train
from tests.conftest import BIN, ROOT

# the README is a guide; the reference pages it points to hold most commands: all are checked
GUIDES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README = "\n".join(p.read_text() for p in GUIDES)


def readme_commands() -> list[list[str]]:
    """Every `bench-*` command in the README and docs/ (inline spans and code blocks), tokenised."""
    text = re.sub(r"\\\n", " ", README)  # shell line continuations
    spans = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    spans = [line for block in spans for line in block.splitlines()]
    spans += re.findall(r"`([^`]{1,400})`", text.replace("```", ""))
    commands = []
    for span in spans:
        text = " ".join(span.split("#")[0].split())
        text = text.removeprefix(".venv/bin/")
        if re.match(r"bench-[a-z]+ ", text + " "):
            commands.append(shlex.split(text))
    return commands


def first_of_sweep(token: str) -> str:
    """`key=a,b,c` -> `key=a` (one job of a sweep); lists in brackets stay whole."""
    key, _, value = token.partition("=")
    if "," in value and not value.startswith("["):
        value = value.split(",")[0]
    return f"{key}={value}"


# a command with --config-dir reads a search's output folder, which a checkout does not have
TRAIN = [
    c
    for c in readme_commands()
    if c[0] == "bench-train" and "--help" not in c and "--config-dir" not in c and "-sc" not in c
]


def test_readme_has_commands():
    assert len(TRAIN) >= 7
    assert {c[0] for c in readme_commands()} >= {"bench-train", "bench-leaderboard", "bench-robust"}


@pytest.mark.parametrize("command", TRAIN, ids=[" ".join(c[1:])[:60] for c in TRAIN])
def test_readme_train_command_composes(command):
    args = [a for a in command[1:] if a not in ("-m", "-v")]
    overrides = [first_of_sweep(a) for a in args]
    compose_train(overrides)


@pytest.mark.slow
def test_readme_tool_flags_exist():
    installed = entry_points(group="console_scripts")
    scripts = {e.name for e in installed if e.value.startswith("bench.")}
    flags: dict[str, set[str]] = {}
    for command in readme_commands():
        assert command[0] in scripts, f"README names {command[0]}, which is not installed"
        flags.setdefault(command[0], set()).update(re.findall(r"--[a-z][a-z-]*", " ".join(command)))
    for tool, used in flags.items():
        if tool == "bench-train":
            continue
        help_text = subprocess.run(
            [str(BIN / tool), "--help"], capture_output=True, text=True, check=True
        ).stdout
        missing = {f for f in used if f not in help_text}
        assert not missing, f"{tool} --help lacks {missing}"


def test_readme_and_docs_links_resolve():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    pages += sorted((ROOT / "results").glob("**/README.md"))
    missing = [
        f"{page.relative_to(ROOT)} -> {link}"
        for page in pages
        for link in re.findall(r"\]\(([^)#]+)\)", page.read_text())
        if not link.startswith("http") and not (page.parent / link).exists()
    ]
    assert not missing, missing
