"""Every ``snapcat`` command in README.md and docs/ parses as written: each flag it names exists,
each value has the type the CLI wants, required arguments are there. A documented command that
has drifted from the CLI fails here, not in a newcomer's terminal.

Commands that cannot be checked this way are skipped by rule, not by list: those holding ``...``
(an elision the reader fills in). Which commands really run end to end on a fresh clone is the
job of the walkthrough tests (the demo, the serving and pipeline tests)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from snapcat.cli import build_parser

REPO = Path(__file__).resolve().parent.parent
DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def shell_blocks(text: str) -> list[str]:
    """The contents of the fenced blocks marked sh/bash/console or unmarked, fence by fence."""
    blocks, current, language = [], None, ""
    for line in text.splitlines():
        fence = line.strip()
        if fence.startswith("```"):
            if current is None:
                current, language = [], fence[3:].strip()
            else:
                if language in ("", "sh", "bash", "console"):
                    blocks.append("\n".join(current))
                current = None
        elif current is not None:
            current.append(line)
    return blocks


def documented_commands() -> list[tuple[str, str]]:
    """(where, command line) for every ``snapcat`` command in a shell block of the docs."""
    found = []
    for document in DOCUMENTS:
        for block in shell_blocks(document.read_text("utf-8")):
            text = re.sub(r"\\\n\s*", " ", block)  # continuation lines
            for line in text.splitlines():
                for part in re.split(r"&&|\|\||;|\|", line.split(" #")[0]):
                    part = part.strip()
                    if part.startswith("snapcat "):
                        found.append((document.name, part))
    return found


def _argv(command: str) -> list[str]:
    """The command's arguments with optional parts (``[--json]``) written in."""
    command = re.sub(r"\[([^\[\]]*)\]", r"\1", command)
    return shlex.split(command)[1:]


COMMANDS = documented_commands()


def test_the_docs_document_commands():
    assert len(COMMANDS) > 30, COMMANDS
    assert {"README.md", "serving.md", "deploy.md", "pipeline.md"} <= {w for w, _ in COMMANDS}


@pytest.mark.parametrize("where, command", COMMANDS, ids=[f"{w}:{c[:60]}" for w, c in COMMANDS])
def test_documented_command_parses(where, command, capsys):
    argv = _argv(command)
    if "..." in argv or any(a.endswith("...") for a in argv if not a.startswith("-")):
        pytest.skip("holds '...': the reader fills in the rest")
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
    except SystemExit as exc:
        pytest.fail(
            f"{where}: `{command}` does not parse: {capsys.readouterr().err.strip()} ({exc})"
        )
    if extra and not getattr(args, "passthrough", False):
        pytest.fail(f"{where}: `{command}`: unknown arguments {extra}")
