"""README.md's shell commands, read from its fenced code blocks so tests cannot drift from it.

Convention (also in README's "Commands in this README are tested"): every non-empty line of a
fenced block marked ``sh``, ``bash``, ``shell`` or ``console`` is one command (a trailing
``\\`` joins lines; ``# ...`` after whitespace is a comment; a leading ``$ `` prompt is
dropped). Commands starting with ``magtek-bridge`` run through the installed script; the rest
are shell commands each test file must account for. Other blocks (``toml``, ``json``...) are
examples of files or payloads, not commands.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

SHELL_LANGUAGES = frozenset({"sh", "bash", "shell", "console"})
_FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>[\w-]*)\s*$")
_COMMENT = re.compile(r"\s+#.*$")


@dataclass(frozen=True)
class ReadmeCommand:
    line: int  # 1-based line in README.md where the command starts
    text: str  # as written, comment removed
    argv: tuple[str, ...]

    def runs_script(self, scripts: frozenset[str] | set[str]) -> bool:
        """Does it start with one of the project's installed scripts?"""
        return bool(self.argv) and self.argv[0] in scripts

    def __str__(self) -> str:
        return f"README.md:{self.line}: {self.text}"


def shell_commands(readme: Path) -> list[ReadmeCommand]:
    """Every command in ``readme``'s shell code blocks, in order."""
    commands: list[ReadmeCommand] = []
    in_block = False
    is_shell = False
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(readme.read_text().splitlines(), start=1):
        fence = _FENCE.match(raw)
        if fence:
            in_block = not in_block
            is_shell = in_block and fence.group("lang").lower() in SHELL_LANGUAGES
            continue
        if not (in_block and is_shell):
            continue
        line = raw.strip()
        if line.startswith("$ "):
            line = line[2:]
        if not pending:
            if not line or line.startswith("#"):
                continue
            start = number
        if line.endswith("\\"):
            pending.append(line[:-1].strip())
            continue
        text = " ".join([*pending, _COMMENT.sub("", line)]).strip()
        pending = []
        argv = tuple(shlex.split(text))
        if argv[:1] == ("sudo",):
            argv = argv[1:]
        commands.append(ReadmeCommand(start, text, argv))
    return commands


__all__ = ["SHELL_LANGUAGES", "ReadmeCommand", "shell_commands"]
