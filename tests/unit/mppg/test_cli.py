"""``magtek-bridge payreq`` against the fake service."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bridge.cli import main


@pytest.fixture
def config(tmp_path, fake_mppg, monkeypatch):
    secret = tmp_path / "mppg-password"
    secret.write_text(fake_mppg.password + "\n")
    path = tmp_path / "config.toml"
    path.write_text(f'[mppg]\nbase_url = "{fake_mppg.base_url}"\n'
                    f'username = "{fake_mppg.username}"\npassword_file = "{secret}"\n'
                    'processor_name = "CLI PROCESSOR"\n')
    monkeypatch.setenv("MAGTEK_BRIDGE_CONFIG", str(path))
    return path


def test_create_prints_the_link(config, fake_mppg, capsys):
    assert main(["payreq", "create", "--amount", "12.50", "--customer-tran-id", "o-1",
                 "--info", "lane=3", "--no-prompt-tips"]) == 0
    out = capsys.readouterr().out
    (request,) = fake_mppg.requests.values()
    assert request.id in out and "Active" in out and "paymentLink" in out
    assert "access_token" not in out  # the bearer WebSocket URL only with --json
    assert request.definition["usageCountLimit"] == 1
    assert request.definition["processorName"] == "CLI PROCESSOR"
    assert request.definition["additionalInfo"] == [{"key": "lane", "value": "3"}]
    assert request.definition["promptForTips"] is False


def test_create_without_link_in_the_answer_fetches_it(config, fake_mppg, capsys):
    fake_mppg.links_on_create = False
    assert main(["payreq", "create", "--amount", "1"]) == 0
    assert "mppgtouchless" in capsys.readouterr().out


def test_json_output_is_clean_json(config, fake_mppg, capsys):
    rid = fake_mppg.seed("7.25")
    assert main(["payreq", "get", rid, "--json", "--log-level", "debug"]) == 0
    captured = capsys.readouterr()
    detail = json.loads(captured.out)  # logs went to stderr
    assert detail["paymentRequestID"] == rid and detail["websocketToken"]
    assert main(["payreq", "list", "--json", "--status", "active", "--page-size", "5"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert listing["totalRecordsAvailable"] == 1


def test_list_table(config, fake_mppg, capsys):
    ids = [fake_mppg.seed("1.00", customerTranID=f"c-{n}") for n in range(3)]
    assert main(["payreq", "list", "--page-size", "2"]) == 0
    out = capsys.readouterr().out
    assert ids[0] in out and ids[2] not in out
    assert "2 shown, 3 in the date range" in out


def test_errors_exit_1_with_the_code(config, fake_mppg, capsys):
    assert main(["payreq", "create", "--amount", "1.999"]) == 1
    assert "40023" in capsys.readouterr().err
    fake_mppg.server_error = True
    assert main(["payreq", "list"]) == 1
    assert "50000" in capsys.readouterr().err


def test_missing_base_url_is_a_config_error(tmp_path, monkeypatch, capsys):
    path = tmp_path / "c.toml"
    path.write_text("[mppg]\nusername = 'u'\n")
    monkeypatch.setenv("MAGTEK_BRIDGE_CONFIG", str(path))
    assert main(["payreq", "list"]) == 2
    assert "mppg.base_url" in capsys.readouterr().err


def test_plain_http_to_a_remote_host_is_refused(tmp_path, monkeypatch, capsys):
    path = tmp_path / "c.toml"
    path.write_text("[mppg]\nbase_url = 'http://mppg.example.com/PaymentRequest'\n")
    monkeypatch.setenv("MAGTEK_BRIDGE_CONFIG", str(path))
    assert main(["payreq", "list"]) == 2
    assert "https" in capsys.readouterr().err


def test_update_changes_only_what_is_given(config, fake_mppg, capsys):
    rid = fake_mppg.seed("5.00", usageCountLimit=3, customerTranID="keep-me")
    assert main(["payreq", "update", rid, "--disable"]) == 0
    out = capsys.readouterr().out
    assert "Disabled" in out and "enabled           no" in out
    assert main(["payreq", "update", rid, "--amount", "6.25"]) == 0  # still disabled
    capsys.readouterr()
    stored = fake_mppg.requests[rid].definition
    assert float(stored["amount"]) == 6.25 and stored["isEnabled"] is False
    assert stored["usageCountLimit"] == 3 and stored["customerTranID"] == "keep-me"
    assert main(["payreq", "update", rid, "--enable", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == 2


def test_update_with_nothing_to_change_says_so(config, fake_mppg, capsys):
    rid = fake_mppg.seed("5.00")
    assert main(["payreq", "update", rid]) == 2
    assert "nothing to change" in capsys.readouterr().out


def test_update_of_an_unknown_request_exits_1(config, fake_mppg, capsys):
    assert main(["payreq", "update", "00000000-0000-0000-0000-000000000000",
                 "--amount", "1"]) == 1
    assert "40018" in capsys.readouterr().err


@pytest.mark.parametrize("failure", ["garbage", "slow"])
def test_an_ambiguous_create_is_looked_up_before_failing(config, fake_mppg, capsys, failure):
    config.write_text(config.read_text() + "request_timeout = 1.0\n")
    fake_mppg.create_failure = failure  # MPPG stored it, and its answer was lost or garbled
    fake_mppg.slow_seconds = 3.0
    assert main(["payreq", "create", "--amount", "7", "--customer-tran-id", "order-7"]) == 0
    captured = capsys.readouterr()
    (stored,) = fake_mppg.requests  # found, not created a second time
    assert stored in captured.out and "mppgtouchless" in captured.out
    assert "found by customerTranID" in captured.err


def test_an_ambiguous_create_without_customer_tran_id_says_so(config, fake_mppg, capsys):
    fake_mppg.create_failure = "garbage"
    assert main(["payreq", "create", "--amount", "7"]) == 1
    err = capsys.readouterr().err
    assert "50200" in err and "without a customerTranID" in err


def test_an_ambiguous_create_that_made_nothing_is_reported_as_such(config, fake_mppg, capsys):
    fake_mppg.create_failure = "garbage"
    fake_mppg.create_stores = False  # the failure is genuine: nothing was stored
    fake_mppg.seed("7.00", customerTranID="order-8", created=datetime.now(UTC) - timedelta(
        hours=2))  # an older request with the same id must not be taken for it
    assert main(["payreq", "create", "--amount", "7", "--customer-tran-id", "order-8"]) == 1
    err = capsys.readouterr().err
    assert "50200" in err and "safe to retry" in err


def test_the_installed_command_recovers_an_ambiguous_create(config, fake_mppg):
    fake_mppg.create_failure = "garbage"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAGTEK_BRIDGE_")}
    env["MAGTEK_BRIDGE_CONFIG"] = str(config)
    result = subprocess.run(
        [str(Path(sys.executable).parent / "magtek-bridge"), "payreq", "create", "--amount",
         "12.50", "--customer-tran-id", "order-42", "--json"],
        env=env, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    (stored,) = fake_mppg.requests
    detail = json.loads(result.stdout)
    assert detail["paymentRequestID"] == stored and detail["paymentLink"]
    assert "found by customerTranID" in result.stderr
