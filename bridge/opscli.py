"""Operator subcommands beside the daemon: ``send``, ``monitor`` and ``config check``.

Kept out of ``bridge/cli.py`` so that file stays a thin dispatcher. Tools print their answer on
stdout and nothing else; logs go to stderr, errors only unless ``-v`` (info) or ``-vv``
(debug) is given.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

from bridge.mms import EXAMPLES

if TYPE_CHECKING:
    from bridge.config import Settings

AddArgs = Callable[[argparse.ArgumentParser], None]
EXIT_USAGE: Final = 2

_SEND_EPILOG: Final = """\
named commands (the examples of PROTOCOL.md; case-insensitive, '-' or '_'):
{names}
aliases: getdevicesn = get_serial, getfirmwareid = get_firmware_id, pcireset = reset

exit codes: 0 the reader reported success; 1 it reported a failure (or runtime error);
2 bad usage or configuration; 3 no response within --timeout; 4 the bridge rejected it;
130 Ctrl-C before the response (Ctrl-C during --follow keeps the response's code).
"""


def _named_commands() -> str:
    return textwrap.fill(", ".join(sorted(EXAMPLES)), width=90, initial_indent="  ",
                         subsequent_indent="  ")


def reader_root(text: str) -> str:
    """argparse type of a reader root (or serial, or ``auto``) that is published to.

    MQTT forbids wildcards in a topic name: the publish would be refused after connecting
    (then a misleading "no answer from the broker") instead of a usage error.
    """
    if not text.strip("/") or any(c in text for c in "+#\0"):
        raise argparse.ArgumentTypeError(
            f"{text!r}: a reader root is a topic name, e.g. MagTek/Device/DynaFlexII/B123456 "
            "(no '+' or '#' wildcards)")
    return text


def root_filter(text: str) -> str:
    """argparse type of ``monitor``'s root: '+' levels allowed, '#' not (leaves are added)."""
    if not text.strip("/") or "#" in text or "\0" in text or any(
            "+" in level and level != "+" for level in text.split("/")):
        raise argparse.ArgumentTypeError(
            f"{text!r}: a reader root, or one with whole '+' levels such as "
            "MagTek/Device/DynaFlexII/+ (no '#')")
    return text


def _add_verbose(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="log to stderr: -v connection events (info), -vv everything")


def add_send_parser(sub: Any, add_config_args: AddArgs, add_broker_args: AddArgs) -> None:
    send = sub.add_parser(
        "send", help="send a command to a reader through the broker",
        description="Publish an MMS command to <root>/SendCommand and print the reader's "
                    "matching response (decoded, card data masked).",
        epilog=_SEND_EPILOG.format(names=_named_commands()),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(send)
    add_broker_args(send)
    send.add_argument("root", type=reader_root,
                      help="reader root topic, a serial (or its end), or 'auto' for the only "
                           "connected reader")
    # dest differs from the subcommand dest ("command") that main() dispatches on.
    send.add_argument("mms_command", metavar="command",
                      help="a named command (listed below) or the command as hex")
    send.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS",
                      help="how long to wait for the response (default: 10)")
    send.add_argument("--follow", type=float, default=0.0, metavar="SECONDS",
                      help="keep printing notifications this long after the response")
    send.add_argument("--json", action="store_true", help="one JSON object per message")
    _add_verbose(send)


def add_monitor_parser(sub: Any, add_config_args: AddArgs, add_broker_args: AddArgs) -> None:
    monitor = sub.add_parser(
        "monitor", help="print decoded reader messages as they arrive",
        description="Subscribe to the readers' MMSMessage, Status, Error and Info topics and "
                    "print each message (decoded, card data masked), one per line on stdout. "
                    "With -v, stderr says when the subscription is in place.")
    add_config_args(monitor)
    add_broker_args(monitor)
    monitor.add_argument("root", nargs="?", type=root_filter,
                         help="one reader root, a serial (or its end), or 'auto' for the only "
                              "connected reader, as for send (default: all readers)")
    monitor.add_argument("--count", type=int, default=0, metavar="N",
                         help="stop after N messages (default: no limit)")
    monitor.add_argument("--duration", type=float, default=0.0, metavar="SECONDS",
                         help="stop after SECONDS in all, connecting included (default: none)")
    monitor.add_argument("--json", action="store_true", help="one JSON object per message")
    _add_verbose(monitor)


def add_config_parser(sub: Any) -> None:
    config = sub.add_parser("config", help="check and show the effective configuration")
    ops = config.add_subparsers(dest="config_command", required=True)
    check = ops.add_parser(
        "check", help="load file + environment, print every value and where it came from",
        description="Load the configuration the way 'run' does (TOML file, then "
                    "MAGTEK_BRIDGE_<SECTION>__<KEY> variables), print each value with its "
                    "source (default, file, env), secrets redacted, and flag unknown "
                    "MAGTEK_BRIDGE_* variables. Exit 0 when it is valid, 2 otherwise.")
    check.add_argument("--config", metavar="PATH",
                       help="TOML config file (default: $MAGTEK_BRIDGE_CONFIG or "
                            "/etc/magtek-bridge/config.toml)")
    check.add_argument("--quiet", "-q", action="store_true",
                       help="print problems only (for scripts: the exit code says it)")


def add_health_parser(sub: Any, add_config_args: AddArgs) -> None:
    health = sub.add_parser(
        "health", help="ask a running bridge's /healthz; exit 0 when healthy (HEALTHCHECK)",
        description="GET /healthz (or /readyz with --ready) of the bridge on this host, at "
                    "the [metrics] address and port of the same configuration 'run' reads "
                    "(file and MAGTEK_BRIDGE_* variables). Prints the answer; exit 0 when it "
                    "is 200, 1 otherwise, 2 when the configuration has no metrics endpoint.")
    add_config_args(health)
    health.add_argument("--ready", action="store_true",
                        help="ask /readyz (MQTT connected and readers open) instead")
    health.add_argument("--timeout", type=float, default=3.0, metavar="SECONDS",
                        help="how long to wait for the answer (default: 3)")


def cmd_health(args: argparse.Namespace, settings: Settings) -> int:
    import urllib.error  # noqa: PLC0415
    import urllib.request  # noqa: PLC0415

    metrics = settings.metrics
    if not metrics.enabled:
        print("error: metrics.enabled is false: the bridge serves no /healthz", file=sys.stderr)
        return EXIT_USAGE
    # A wildcard listen address is reached on loopback.
    wildcards = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}  # noqa: S104
    host = wildcards.get(metrics.address, metrics.address)
    host = f"[{host}]" if ":" in host else host
    url = f"http://{host}:{metrics.port}/{'readyz' if args.ready else 'healthz'}"
    try:
        with urllib.request.urlopen(url, timeout=args.timeout) as answer:
            print(answer.read().decode(errors="replace").strip())
            return 0
    except urllib.error.HTTPError as exc:
        print(exc.read().decode(errors="replace").strip())
        return 1
    except OSError as exc:
        print(f"error: no answer from {url} (metrics.port): {getattr(exc, 'reason', exc)}",
              file=sys.stderr)
        return 1


def _tool_logging(args: argparse.Namespace, settings: Settings) -> None:
    from bridge.logs import configure_logging  # noqa: PLC0415

    level = {0: "error", 1: "info"}.get(args.verbose, "debug")
    configure_logging(args.log_level or level, settings.logging.format)


def cmd_send(args: argparse.Namespace, settings: Settings) -> int:
    from bridge import client  # noqa: PLC0415
    from bridge.app import link_options  # noqa: PLC0415
    from bridge.errors import ProtocolError  # noqa: PLC0415

    _tool_logging(args, settings)
    try:
        command = client.command_bytes(args.mms_command)
    except ProtocolError as exc:
        print(f"error: {args.mms_command!r} is neither a named command nor hex ({exc}); "
              f"named commands: {', '.join(sorted(EXAMPLES))}", file=sys.stderr)
        return EXIT_USAGE
    options = link_options(settings)
    root = client.resolve_root(options, settings.topics.prefix, args.root)
    return client.send(options, root, command, timeout=args.timeout, follow=args.follow,
                       as_json=args.json)


def cmd_monitor(args: argparse.Namespace, settings: Settings) -> int:
    from bridge import client  # noqa: PLC0415
    from bridge.app import link_options  # noqa: PLC0415

    _tool_logging(args, settings)

    def ready(filters: list[str]) -> None:
        if args.verbose:
            print(f"monitor: subscribed to {', '.join(filters)}", file=sys.stderr, flush=True)

    options = link_options(settings)
    root = args.root
    if root is not None and "/" not in root:  # a serial or 'auto', as send takes
        root = client.resolve_root(options, settings.topics.prefix, root)
    return client.monitor(options, settings.topics.prefix, root,
                          count=args.count, duration=args.duration, as_json=args.json,
                          on_ready=ready)


def cmd_config(args: argparse.Namespace) -> int:
    from bridge.configcheck import check_config  # noqa: PLC0415

    return check_config(args.config, os.environ, quiet=args.quiet)


def warn_unknown_env(environ: Mapping[str, str] | None = None) -> None:
    """Log each MAGTEK_BRIDGE_* variable the configuration does not know (``run``)."""
    import structlog  # noqa: PLC0415

    from bridge.configcheck import unknown_env_vars  # noqa: PLC0415

    log = structlog.get_logger("bridge.config")
    for name, hint in unknown_env_vars(os.environ if environ is None else environ):
        log.warning("unknown_environment_variable", variable=name, hint=hint)


__all__ = [
    "add_config_parser",
    "add_health_parser",
    "add_monitor_parser",
    "add_send_parser",
    "cmd_config",
    "cmd_health",
    "cmd_monitor",
    "cmd_send",
    "reader_root",
    "root_filter",
    "warn_unknown_env",
]
