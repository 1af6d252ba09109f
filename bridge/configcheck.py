"""``magtek-bridge config check``: the effective configuration, where each value came from.

Loads exactly what ``run`` loads (TOML file, then ``MAGTEK_BRIDGE_<SECTION>__<KEY>``), prints
every key with its value (secrets redacted) and its source, and flags ``MAGTEK_BRIDGE_*``
variables that configure nothing: pydantic-settings ignores a variable that matches no field,
so ``MAGTEK_BRIDGE_MQTT_PORT`` (one underscore) would silently leave the port at its default.
"""

from __future__ import annotations

import difflib
import json
import sys
from collections.abc import Iterator, Mapping
from typing import Any, Final, TextIO

from pydantic import BaseModel, SecretStr

from bridge.config import (
    CONFIG_ENV,
    ENV_PREFIX,
    Settings,
    env_var_name,
    load_settings,
    read_config_file,
)
from bridge.errors import ConfigError

EXIT_OK: Final = 0
EXIT_CONFIG: Final = 2
REDACTED: Final = "<redacted>"


def _known_paths(model: type[BaseModel], prefix: tuple[str, ...] = ()
                 ) -> Iterator[tuple[tuple[str, ...], bool]]:
    """Every settable key path, and whether anything below it is accepted (free-form dicts)."""
    for name, field in model.model_fields.items():
        path = (*prefix, name)
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield path, False
            yield from _known_paths(annotation, path)
        else:
            origin = getattr(annotation, "__origin__", None)
            yield path, origin is dict


def known_env_names() -> dict[str, bool]:
    """``MAGTEK_BRIDGE_...`` names the configuration reads -> whether sub-keys are allowed."""
    names = {env_var_name(path): open_below for path, open_below in _known_paths(Settings)}
    names[CONFIG_ENV] = False
    return names


def unknown_env_vars(environ: Mapping[str, str]) -> list[tuple[str, str]]:
    """(variable, hint) for each ``MAGTEK_BRIDGE_*`` variable that sets nothing."""
    known = known_env_names()
    unknown: list[tuple[str, str]] = []
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper in known:
            continue
        if any(open_below and upper.startswith(k + "__") for k, open_below in known.items()):
            continue
        unknown.append((name, _hint(upper, known)))
    return unknown


def _hint(name: str, known: Mapping[str, bool]) -> str:
    flat = name[len(ENV_PREFIX):].replace("__", "_")
    same_words = [k for k in known if k[len(ENV_PREFIX):].replace("__", "_") == flat]
    if same_words:
        return (f"did you mean {same_words[0]}? (sections and keys are separated by two "
                "underscores)")
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.8)
    if close:
        return f"did you mean {close[0]}?"
    return "no such setting (see config.example.toml)"


def _leaves(model: BaseModel, prefix: tuple[str, ...] = ()
            ) -> Iterator[tuple[tuple[str, ...], Any]]:
    for name in type(model).model_fields:
        value = getattr(model, name)
        path = (*prefix, name)
        if isinstance(value, BaseModel):
            yield from _leaves(value, path)
        else:
            yield path, value


def _shown(value: Any) -> str:
    if isinstance(value, SecretStr):
        return REDACTED
    return json.dumps(value, default=str)


def _source(path: tuple[str, ...], toml: Mapping[str, Any], env_upper: Mapping[str, str]
            ) -> str:
    for depth in range(len(path), 0, -1):
        name = env_upper.get(env_var_name(path[:depth]))
        if name is not None:
            return f"env {name}"
    node: Any = toml
    for part in path:
        if not isinstance(node, Mapping) or part not in node:
            return "default"
        node = node[part]
    return "file"


def effective_config(settings: Settings, toml: Mapping[str, Any],
                     environ: Mapping[str, str]) -> list[tuple[str, str, str]]:
    """(dotted key, value as shown, source) for every key, secrets redacted."""
    env_upper = {k.upper(): k for k in environ}
    return [(".".join(path), _shown(value), _source(path, toml, env_upper))
            for path, value in _leaves(settings)]


def check_config(config_path: str | None, environ: Mapping[str, str], *, quiet: bool = False,
                 out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Print the effective configuration and its problems; 0 when valid, 2 otherwise."""
    env = dict(environ)
    problems: list[str] = []
    settings: Settings | None = None
    toml: dict[str, Any] = {}
    path_text = "?"
    try:
        path, toml = read_config_file(config_path, env)
        path_text = f"{path}" if path.is_file() else f"{path} (missing: defaults)"
        settings = load_settings(config_path, environ=env)
    except ConfigError as exc:
        problems.append(f"configuration error: {exc}")
    for name, hint in unknown_env_vars(env):
        problems.append(f"unknown environment variable {name}: {hint}")
    if settings is not None and not quiet:
        print(f"# config file: {path_text}", file=out)
        rows = effective_config(settings, toml, env)
        width = max(len(key) + len(value) for key, value, _ in rows) + 4
        for key, value, source in rows:
            print(f"{key} = {value}".ljust(width) + f"# {source}", file=out)
    for problem in problems:
        print(problem, file=err)
    if problems:
        return EXIT_CONFIG
    if not quiet:
        print("configuration ok", file=err)
    return EXIT_OK


__all__ = ["check_config", "effective_config", "known_env_names", "unknown_env_vars"]
