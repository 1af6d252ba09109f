"""Command-line interface: parse arguments, call one function, print, return an exit code.

Exit codes: 0 ok; 1 failure reported by the reader (``send``) or a runtime error; 2 bad usage
or configuration (the message names the file or key); 3 timeout; 4 command rejected.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from bridge import __version__
from bridge.errors import BridgeError, ConfigError, ProtocolError
from bridge.mppg.cli import add_payreq_parser
from bridge.opscli import (
    add_config_parser,
    add_health_parser,
    add_monitor_parser,
    add_send_parser,
    cmd_config,
    cmd_health,
    cmd_monitor,
    cmd_send,
    warn_unknown_env,
)

EXIT_CONFIG = 2


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="PATH",
                        help="TOML config file (default: $MAGTEK_BRIDGE_CONFIG or "
                             "/etc/magtek-bridge/config.toml)")
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"],
                        help="log level (overrides logging.level)")


def _add_broker_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="broker host (overrides mqtt.host)")
    parser.add_argument("--port", type=int, help="broker port (overrides mqtt.port)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="magtek-bridge",
        description="Bridge MagTek MMS card readers (USB-HID) to MQTT.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser(
        "run", help="run the bridge daemon",
        description="Run the bridge: open MagTek MMS readers (hidraw/hidapi, or simulated ones) "
                    "and relay them to the MQTT broker until SIGTERM/SIGINT. Logs go to stderr "
                    "(JSON lines unless on a terminal); metrics and health on [metrics] "
                    "address:port.")
    _add_config_args(run)
    run.add_argument("--simulate", type=int, metavar="N",
                     help="use N simulated DynaFlex II readers instead of hidapi")

    decode = sub.add_parser("decode", help="decode an MMS message given as hex (card data masked)")
    decode.add_argument("hex", nargs="+", help="the message as hex (spaces allowed)")
    decode.add_argument("--json", action="store_true", help="machine-readable output")

    devices = sub.add_parser("devices", help="list attached MagTek MMS readers (hidapi), "
                                             "and hidraw nodes it cannot open, with why")
    _add_config_args(devices)
    devices.add_argument("--hid-api", choices=["auto", "hidraw", "libusb"],
                         help="hidapi module (overrides readers.hid_api)")
    devices.add_argument("--json", action="store_true", help="machine-readable output")

    add_send_parser(sub, _add_config_args, _add_broker_args)
    add_monitor_parser(sub, _add_config_args, _add_broker_args)
    add_config_parser(sub)
    add_health_parser(sub, _add_config_args)

    add_payreq_parser(sub, _add_config_args)

    clear = sub.add_parser("clear-root", help="clear a reader root's retained Status and Info "
                                             "(a ghost reader) on the broker")
    _add_config_args(clear)
    _add_broker_args(clear)
    clear.add_argument("root", help="the reader root, e.g. MagTek/Device/DynaFlexII/B123456")
    clear.add_argument("--force", action="store_true", help="even if it says connected")

    present = sub.add_parser("present", help="present or remove a card on a simulated reader")
    _add_config_args(present)
    _add_broker_args(present)
    present.add_argument("root", help="reader root topic, a serial, or 'auto' for the only one")
    present.add_argument("action", choices=["insert", "swipe", "tap", "remove"],
                         help="what the person does with the card")

    demo = sub.add_parser("demo", help="embedded broker + simulated reader + bridge, scripted")
    demo.add_argument("--card", choices=["tap", "insert", "swipe"], default="tap",
                      help="how the simulated card is presented (default: tap)")
    demo.add_argument("--log-level", choices=["debug", "info", "warning", "error"],
                      default="warning", help="log level of the embedded bridge")
    return parser


def _settings(args: argparse.Namespace, overrides: dict[str, Any] | None = None) -> Any:
    from bridge.config import load_settings  # noqa: PLC0415 - keeps `decode` light

    merged: dict[str, Any] = dict(overrides or {})
    if getattr(args, "log_level", None):
        merged.setdefault("logging", {})["level"] = args.log_level
    if getattr(args, "host", None):
        merged.setdefault("mqtt", {})["host"] = args.host
    if getattr(args, "port", None):
        merged.setdefault("mqtt", {})["port"] = args.port
    return load_settings(args.config, overrides=merged)


def _cmd_run(args: argparse.Namespace) -> int:
    from bridge.app import run  # noqa: PLC0415
    from bridge.logs import configure_logging  # noqa: PLC0415

    overrides: dict[str, Any] = {}
    if args.simulate:
        overrides["readers"] = {"simulate": args.simulate, "backend": "simulated"}
    settings = _settings(args, overrides)
    configure_logging(settings.logging.level, settings.logging.format)
    warn_unknown_env()
    return run(settings)


def _cmd_decode(args: argparse.Namespace) -> int:
    from bridge.mms import describe, describe_dict, normalize_command_hex, parse_message  # noqa: PLC0415

    try:
        message = parse_message(normalize_command_hex("".join(args.hex)))
    except ProtocolError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(describe_dict(message), indent=2))
    else:
        print(describe(message))
    return 0


def _cmd_devices(args: argparse.Namespace) -> int:
    from bridge.devices import list_devices  # noqa: PLC0415

    settings = _settings(args)
    return list_devices(args.hid_api or settings.readers.hid_api, sys.stdout, as_json=args.json)


def _cmd_payreq(args: argparse.Namespace) -> int:
    from bridge.logs import configure_logging  # noqa: PLC0415
    from bridge.mppg.cli import run_payreq  # noqa: PLC0415

    settings = _settings(args)
    # Logs go to stderr and stay quiet unless asked: stdout is the answer (--json pipes it).
    configure_logging(args.log_level or "warning", settings.logging.format)
    return run_payreq(args, settings)


def _cmd_clear_root(args: argparse.Namespace) -> int:
    from bridge.app import link_options  # noqa: PLC0415
    from bridge.ghosts import clear_root  # noqa: PLC0415

    done, what = clear_root(link_options(_settings(args)), args.root, force=args.force)
    print(what, file=sys.stdout if done else sys.stderr)
    return 0 if done else 4


def _cmd_present(args: argparse.Namespace) -> int:
    from bridge.app import link_options  # noqa: PLC0415
    from bridge.simulator.cli import present  # noqa: PLC0415

    settings = _settings(args)
    return present(link_options(settings), settings.topics.prefix, args.root, args.action)


def _cmd_demo(args: argparse.Namespace) -> int:
    from bridge.demo import run_demo  # noqa: PLC0415

    return run_demo(card=args.card, log_level=args.log_level)


_COMMANDS = {
    "run": _cmd_run,
    "decode": _cmd_decode,
    "devices": _cmd_devices,
    "send": lambda args: cmd_send(args, _settings(args)),
    "monitor": lambda args: cmd_monitor(args, _settings(args)),
    "config": cmd_config,
    "health": lambda args: cmd_health(args, _settings(args)),
    "demo": _cmd_demo,
    "payreq": _cmd_payreq,
    "clear-root": _cmd_clear_root,
    "present": _cmd_present,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except (BridgeError, LookupError, TimeoutError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


__all__ = ["build_parser", "main"]
