"""Logs never carry card data or secrets, whatever was passed in."""

from __future__ import annotations

import io
import json
import logging
import threading

import structlog

from bridge.logs import configure_logging, redact_text
from bridge.mms.redact import luhn_valid, pan_like

PAN = "4761730000000119"


def test_redact_text_patterns():
    assert PAN not in redact_text(f"card {PAN} seen")
    assert "4761 7300 0000 0119" not in redact_text("card 4761 7300 0000 0119")
    assert "=2512" not in redact_text(f"track ;{PAN}=25122010000000000000?")
    assert "B4761" not in redact_text(f"%B{PAN}^TEST/CARD^2512201?")
    blob = "AB" * 40
    assert blob not in redact_text(f"blob {blob}")
    assert redact_text("reader B123456 ref 0xB5 at 2026-11-22T12:00:00Z") == (
        "reader B123456 ref 0xB5 at 2026-11-22T12:00:00Z")


def test_debug_events_are_redacted_in_json():
    stream = io.StringIO()
    configure_logging("debug", "json", stream=stream)
    log = structlog.get_logger("test")
    log.debug("card_event", pan=PAN, nested={"track": f";{PAN}=2512?", "list": [PAN]},
              password="hunter2", token="abc", payload=bytes(40), serial="B123456",
              raw="AA00" * 30)
    line = stream.getvalue().strip()
    record = json.loads(line)
    assert PAN not in line and "hunter2" not in line and "AA00AA00" not in line
    assert record["serial"] == "B123456"
    assert record["event"] == "card_event"
    assert record["level"] == "debug"
    assert record["payload"] == "<40 bytes>"


def test_level_filtering():
    stream = io.StringIO()
    configure_logging("warning", "json", stream=stream)
    structlog.get_logger("test").info("hidden")
    structlog.get_logger("test").warning("shown")
    assert "hidden" not in stream.getvalue()
    assert "shown" in stream.getvalue()


# Luhn-valid test card numbers (Visa, Mastercard, Amex, Discover, and a 19-digit one built
# here); each is checked below so a typo cannot make a test pass.
def _with_check_digit(body: str) -> str:
    return next(body + d for d in "0123456789" if luhn_valid(body + d))


TEST_PANS = ["4761739001010010", "4111111111111111", "5555555555554444", "378282246310005",
             "6011111111111117", _with_check_digit("601100099013942401")]


def _grouped(pan: str, sep: str) -> str:
    return sep.join(pan[i:i + 4] for i in range(0, len(pan), 4))


def test_test_pans_are_luhn_valid():
    assert all(luhn_valid(pan) for pan in TEST_PANS)
    assert len(TEST_PANS[-1]) == 19
    assert not luhn_valid("4761730000000118")


def test_pans_grouped_by_dots_spaces_or_dashes_are_masked():
    for pan in TEST_PANS:
        for sep in (".", " ", "-"):
            text = f"card {_grouped(pan, sep)} read"
            out = redact_text(text)
            assert _grouped(pan, sep) not in out and pan[-4:] not in out, out
            assert out.startswith("card ") and out.endswith(" read")


def test_ascii_hex_pans_are_masked():
    for pan in TEST_PANS:
        for form in (pan, _grouped(pan, "."), _grouped(pan, " "), _grouped(pan, "-")):
            raw = form.encode("ascii")
            for hexed in (raw.hex(), raw.hex().upper(), raw.hex(" "), raw.hex(":"),
                          raw.hex("-")):
                out = redact_text(f"value {hexed} end")
                assert hexed not in out and raw.hex()[-8:] not in out, (form, hexed, out)


def test_ordinary_values_stay_readable():
    for text in ("reader B123456 at 10.0.0.12:1883 version 1.2.3",
                 "took 0.25 s, 1234 messages, seq 987654321",
                 "ref 0xB5 command 1F01 status 0000"):
        assert redact_text(text) == text


def test_url_secrets_are_masked():
    out = redact_text("GET https://user:hunter2@pay.example/x?token=abcdef&page=2 200")
    assert "hunter2" not in out and "abcdef" not in out and "page=2" in out


def test_mms_describe_masks_a_pan_in_an_unknown_tag():
    for pan in TEST_PANS:
        assert pan_like(pan.encode())
        assert pan_like(_grouped(pan, " ").encode())
        packed = bytes.fromhex(pan + "F" * (len(pan) % 2))
        assert pan_like(packed)
    assert not pan_like(b"B123456") and not pan_like(bytes.fromhex("0000000010000000"))


def test_stdlib_loggers_share_the_format_and_the_redaction():
    stream = io.StringIO()
    configure_logging("info", "json", stream=stream)
    pan = TEST_PANS[1]
    logging.getLogger("websockets.server").warning("handshake from %s failed", pan)
    logging.getLogger("httpx").info("HTTP Request: GET https://h/p?token=s3cr3t-value")
    try:
        raise ValueError(f"bad card {_grouped(pan, '.')}")
    except ValueError:
        logging.getLogger("asyncio").exception("callback failed")
    logging.getLogger("noisy").debug("below the level")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [r["logger"] for r in lines] == ["websockets.server", "httpx", "asyncio"]
    assert [r["level"] for r in lines] == ["warning", "info", "error"]
    text = stream.getvalue()
    assert pan not in text and "s3cr3t-value" not in text and pan[-4:] not in text
    assert "ValueError" in lines[2]["exception"]
    assert all("timestamp" in r for r in lines)


def test_a_crashed_thread_is_logged_not_printed(capsys):
    stream = io.StringIO()
    configure_logging("info", "json", stream=stream)

    def boom() -> None:
        raise RuntimeError(f"card {TEST_PANS[0]}")

    thread = threading.Thread(target=boom, name="worker-x")
    thread.start()
    thread.join()
    record = json.loads(stream.getvalue().strip().splitlines()[-1])
    assert record["event"] == "thread_crashed" and record["thread"] == "worker-x"
    assert "RuntimeError" in record["exception"] and TEST_PANS[0] not in record["exception"]
    assert "Traceback" not in capsys.readouterr().err


def test_setting_up_twice_does_not_double_lines():
    first, second = io.StringIO(), io.StringIO()
    configure_logging("info", "json", stream=first)
    configure_logging("info", "json", stream=second)
    logging.getLogger("x").warning("once")
    assert first.getvalue() == "" and second.getvalue().count("once") == 1
