"""``config check`` and the configuration errors an operator meets: each names what to fix."""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import pytest

from bridge.cli import build_parser
from bridge.config import load_settings
from bridge.configcheck import check_config, unknown_env_vars
from bridge.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "config.example.toml"


def _check(config: str | None, env: dict[str, str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = check_config(config, env, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_prints_values_with_their_source_and_redacts_secrets(tmp_path):
    config = tmp_path / "config.toml"
    # TLS on: a password for a broker beyond loopback is refused over plain TCP.
    config.write_text('[mqtt]\nhost = "broker.store"\n[mqtt.tls]\nenabled = true\n'
                      '[metrics]\nport = 9200\n')
    code, out, err = _check(str(config), {"MAGTEK_BRIDGE_MQTT__PORT": "1884",
                                          "MAGTEK_BRIDGE_MQTT__PASSWORD": "hunter2-secret"})
    assert code == 0, err
    rows = {line.split(" = ")[0]: line for line in out.splitlines() if " = " in line}
    assert rows["mqtt.host"].endswith("# file") and '"broker.store"' in rows["mqtt.host"]
    assert rows["mqtt.port"].endswith("# env MAGTEK_BRIDGE_MQTT__PORT")
    assert "1884" in rows["mqtt.port"]
    assert rows["metrics.port"].endswith("# file")
    assert rows["mqtt.keepalive"].endswith("# default")
    assert "<redacted>" in rows["mqtt.password"]
    assert "hunter2" not in out + err
    assert "configuration ok" in err


def test_single_underscore_typo_is_flagged_with_the_right_name():
    unknown = dict(unknown_env_vars({"MAGTEK_BRIDGE_MQTT_PORT": "1884",
                                     "MAGTEK_BRIDGE_MQTT__PORT": "1884",
                                     "MAGTEK_BRIDGE_CONFIG": "/x",
                                     "MAGTEK_BRIDGE_TOPICS__FRIENDLY_NAMES__B123456": "till-1",
                                     "MAGTEK_BRIDGE_METRICS__PROT": "1",
                                     "OTHER": "1"}))
    assert set(unknown) == {"MAGTEK_BRIDGE_MQTT_PORT", "MAGTEK_BRIDGE_METRICS__PROT"}
    assert "MAGTEK_BRIDGE_MQTT__PORT" in unknown["MAGTEK_BRIDGE_MQTT_PORT"]
    assert "MAGTEK_BRIDGE_METRICS__PORT" in unknown["MAGTEK_BRIDGE_METRICS__PROT"]
    code, _out, err = _check(None, {"MAGTEK_BRIDGE_MQTT_PORT": "1884"})
    assert code == 2
    assert "unknown environment variable MAGTEK_BRIDGE_MQTT_PORT" in err


def test_bad_values_exit_2_and_name_the_variable_or_file(tmp_path):
    code, out, err = _check(None, {"MAGTEK_BRIDGE_MQTT__PORT": "eighty"})
    assert code == 2 and out == ""
    assert "mqtt.port" in err and "MAGTEK_BRIDGE_MQTT__PORT='eighty'" in err
    code, _out, err = _check(None, {"MAGTEK_BRIDGE_READERS__EXPECTED": "[B123456"})
    assert code == 2 and "MAGTEK_BRIDGE_READERS__EXPECTED" in err and "JSON" in err
    code, _out, err = _check(str(tmp_path), {})
    assert code == 2 and "is a directory" in err and str(tmp_path / "config.toml") in err
    code, _out, err = _check(str(tmp_path / "nope.toml"), {})
    assert code == 2 and "does not exist" in err and "--config" in err


def test_secret_values_never_appear_in_errors():
    with pytest.raises(ConfigError) as info:
        load_settings(None, environ={"MAGTEK_BRIDGE_WEBSOCKET__AUTH__TOKEN": "tok-secret",
                                     "MAGTEK_BRIDGE_WEBSOCKET__AUTH__MODE": "bogus"})
    assert "tok-secret" not in str(info.value)
    assert "MAGTEK_BRIDGE_WEBSOCKET__AUTH__MODE='bogus'" in str(info.value)


def test_every_option_of_every_command_has_help():
    missing: list[str] = []

    def walk(parser: argparse.ArgumentParser, path: str) -> None:
        for action in parser._actions:  # argparse has no public walk of its parsers
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, f"{path} {name}")
            elif action.help is None and not isinstance(action, argparse._HelpAction):
                missing.append(f"{path}: {'/'.join(action.option_strings) or action.dest}")

    walk(build_parser(), "magtek-bridge")
    assert not missing, f"options without help text: {missing}"


def test_send_help_lists_the_named_commands(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["send", "--help"])
    text = capsys.readouterr().out
    for name in ("get_serial", "start_emv", "cancel", "reset", "show_qr"):
        assert name in text


def test_send_keeps_its_subcommand_and_its_command_apart():
    args = build_parser().parse_args(["send", "auto", "get_serial"])
    assert (args.command, args.root, args.mms_command) == ("send", "auto", "get_serial")
    args = build_parser().parse_args(["send", "auto", "run"])
    assert args.command == "send" and args.mms_command == "run"


def test_send_refuses_an_unknown_name_before_connecting(capsys):
    from bridge.cli import main  # noqa: PLC0415

    # Port 1 has no broker: reaching it would be exit 1; a usage error is 2 and lists names.
    assert main(["send", "--port", "1", "auto", "get_serail"]) == 2
    err = capsys.readouterr().err
    assert "get_serail" in err and "get_serial" in err and "start_emv" in err


def test_version(capsys):
    from bridge import __version__  # noqa: PLC0415

    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"magtek-bridge {__version__}"
