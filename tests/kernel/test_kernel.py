"""The bridge against virtual DynaFlex readers in a real Linux kernel (QEMU, Debian's kernel).

One VM boot runs the whole scenario (tests/kernel/guest.py) and reports each check; the tests
here assert them one by one. They fail, never skip, when the VM cannot start: the kernel path
is how transport, session and discovery changes are proven.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.kernel.vm import REPO, VmError, run_vm

pytestmark = pytest.mark.kernel

CHECKS = [
    "devices_lists_reader",
    "devices_libusb_explains",
    "connected_at_root",
    "send_command_round_trip",
    "card_transaction_multi_report",
    "unplug_disconnected",
    "replug_connected_same_root",
    "two_readers",
    "unplug_mid_message_loses_only_it",
    "devices_explains_permission",
    "non_root_denied_with_hint",
    "non_root_opens_after_udev_rule",
    "uhid_cli_unplugs_on_sigterm",
]


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    share = tmp_path_factory.mktemp("kernel-vm")
    python = Path(sys.executable)  # the venv's: the guest reads it at the same path
    script = (f"cd {REPO} && PYTHONDONTWRITEBYTECODE=1 HOME=/tmp "
              f"exec {python} -m tests.kernel.guest /tmp/share/results.json\n")
    try:
        run = run_vm(script, share, readable=[python.resolve(), python, REPO])
    except VmError as exc:
        partial = share / "results.json"
        pytest.fail(f"the VM did not run to the end: {exc}\npartial results: "
                    f"{partial.read_text() if partial.exists() else 'none'}", pytrace=False)
    results = share / "results.json"
    if not results.exists():
        pytest.fail(f"the guest scenario wrote no results (exit {run.exit_code}).\n"
                    f"guest log:\n{run.guest_log[-6000:]}\nconsole:\n{run.console}",
                    pytrace=False)
    data: dict[str, Any] = json.loads(results.read_text())
    data["_run"] = {"seconds": round(run.seconds, 1), "exit_code": run.exit_code,
                    "guest_log": run.guest_log[-6000:]}
    print(f"kernel VM run: {run.seconds:.1f} s", file=sys.stderr)
    return data


@pytest.mark.parametrize("check", CHECKS)
def test_kernel_check(scenario: dict[str, Any], check: str) -> None:
    result = scenario.get(check)
    assert result is not None, (f"the scenario never reached {check!r}:\n"
                                f"{scenario['_run']['guest_log']}")
    assert result["ok"], f"{check}: {result['detail']}"


def test_scenario_ended_cleanly(scenario: dict[str, Any]) -> None:
    assert scenario["_run"]["exit_code"] == 0, scenario["_run"]["guest_log"]
