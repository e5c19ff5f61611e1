"""The Dockerfile read offline (no Docker daemon here): its stages and their instructions."""

from __future__ import annotations

import dataclasses
import json
import pathlib
import re

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


@dataclasses.dataclass(frozen=True)
class Stage:
    """One `FROM` of the Dockerfile: its base image (build args resolved to their defaults),
    its `AS` name, and its (INSTRUCTION, arguments) in order."""

    base: str
    name: str | None
    instructions: tuple[tuple[str, str], ...]

    def arguments(self, keyword: str) -> list[str]:
        return [args for instruction, args in self.instructions if instruction == keyword]

    def runs(self) -> str:
        """Every RUN of the stage, joined, runs of whitespace as one space (comments are not
        instructions, so never in it)."""
        return " ".join(" ".join(self.arguments("RUN")).split())

    def exec_form(self, keyword: str) -> list[str] | None:
        """The last ENTRYPOINT/CMD of the stage in exec (JSON) form, or None."""
        values = self.arguments(keyword)
        return json.loads(values[-1]) if values else None


def instructions(path: pathlib.Path = REPO_ROOT / "Dockerfile") -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the whole Dockerfile, continuation lines joined."""
    text = path.read_text().replace("\\\n", " ")
    parsed = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            parsed.append((keyword.upper(), rest.strip()))
    return parsed


def stages(path: pathlib.Path = REPO_ROOT / "Dockerfile") -> list[Stage]:
    """The build stages in order; the last one is what `docker build .` builds."""
    build_args: dict[str, str] = {}
    found: list[Stage] = []
    current: list[tuple[str, str]] | None = None
    for keyword, args in instructions(path):
        if keyword == "ARG" and current is None:  # before the first FROM: usable in FROM lines
            name, _, default = args.partition("=")
            build_args[name] = default
        elif keyword == "FROM":
            parts = re.split(r"\s+as\s+", args, flags=re.I)
            image, alias = parts[0], (parts[1] if len(parts) > 1 else None)
            base = re.sub(r"\$\{?(\w+)\}?", lambda m: build_args[m[1]], image)
            current = []
            found.append(Stage(base, alias, ()))
        if current is not None:
            current.append((keyword, args))
            found[-1] = dataclasses.replace(found[-1], instructions=tuple(current))
    return found


def stage(name: str, path: pathlib.Path = REPO_ROOT / "Dockerfile") -> Stage:
    (named,) = [found for found in stages(path) if found.name == name]
    return named
