"""TLV codec: PROTOCOL.md §3.5 tag and length rules, byte-exact round trips, malformed input."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.errors import ProtocolError
from bridge.mms.tlv import (
    MAX_NESTING_DEPTH,
    Tlv,
    TlvError,
    decode_tlvs,
    encode_tlvs,
    find_tag,
    tlv,
    walk,
)


@pytest.mark.parametrize(
    ("hex_in", "tag", "value", "form"),
    [
        ("9F0206000000000100", "9F02", "000000000100", 0),  # 2-byte tag (§3.5)
        ("DFDF250742313233343536", "DFDF25", "42313233343536", 0),  # 3-byte tag
        ("DFDFDF3702ABCD", "DFDFDF37", "ABCD", 0),  # 4-byte tag
        ("8482001CD101" + "00" * 26, "84", "D101" + "00" * 26, 2),  # 84 82 00 1C (§3.4)
        ("818181" + "11" * 0x81, "81", "11" * 0x81, 0),  # 81 LL is the shortest form for 129
        ("81810511223344 55".replace(" ", ""), "81", "1122334455", 1),  # 81 05: not shortest
        ("838300000122", "83", "22", 3),
        ("890100", "89", "00", 0),
        ("C100", "C1", "", 0),
    ],
)
def test_decodes_tag_value_and_length_form_and_reencodes_identically(hex_in, tag, value, form):
    data = bytes.fromhex(hex_in)
    (item,) = decode_tlvs(data)
    assert item.tag_hex == tag
    assert item.value == bytes.fromhex(value)
    assert item.length_form == form
    assert item.encode() == data
    assert encode_tlvs(decode_tlvs(data)) == data


def test_constructed_tags_decode_their_children_and_primitive_ones_do_not_auto_recurse():
    # The A3 reader options and 86 EMV TLVs of the §3.6 Start Transaction.
    data = bytes.fromhex("A309810101820101830101" "86159C01009F02060000000001009F0306000000000000")
    a3, tlvs86 = decode_tlvs(data)
    assert a3.constructed is True
    assert [(c.tag_hex, c.value) for c in a3.children()] == [
        ("81", b"\x01"), ("82", b"\x01"), ("83", b"\x01")]
    assert tlvs86.constructed is False  # 86 holds TLVs by convention only (§3.5)
    assert [c.tag_hex for c in tlvs86.children()] == ["9C", "9F02", "9F03"]
    # find_tag goes through constructed A3 but never into primitive 86.
    assert find_tag([a3, tlvs86], 0x83) == Tlv(b"\x83", b"\x01")
    assert find_tag([a3, tlvs86], "9F02") is None
    amount = Tlv(b"\x9f\x02", bytes.fromhex("000000000100"))
    assert find_tag(tlvs86.children(), b"\x9f\x02") == amount


def test_walk_is_depth_first_with_depths():
    data = bytes.fromhex("E20CE10AE108E106C104B1234560" "85 01 02".replace(" ", ""))
    assert [(d, t.tag_hex) for d, t in walk(decode_tlvs(data))] == [
        (0, "E2"), (1, "E1"), (2, "E1"), (3, "E1"), (4, "C1"), (0, "85")]


@pytest.mark.parametrize(
    ("hex_in", "reason", "offset"),
    [
        ("9F", "truncated_tag", 0),
        ("5A01009F", "truncated_tag", 3),  # second item's tag cut short
        ("DFDFDF", "truncated_tag", 0),
        ("DFDFDFDF0100", "tag_too_long", 0),  # 5-byte tag
        ("000100", "empty_tag", 0),
        ("5A0100 00".replace(" ", ""), "empty_tag", 3),
        ("5A", "truncated_length", 1),
        ("9F02", "truncated_length", 2),
        ("5A8200", "truncated_length", 1),
        ("5A830000", "truncated_length", 1),
        ("5A80", "bad_length", 1),  # indefinite length
        ("5A840000000100", "bad_length", 1),
        ("5AFF", "bad_length", 1),
        ("5A050102", "length_past_end", 1),
        ("5A0101" "9F0282FFFF00", "length_past_end", 5),
    ],
)
def test_malformed_input_raises_tlv_error_with_reason_and_offset(hex_in, reason, offset):
    with pytest.raises(TlvError) as caught:
        decode_tlvs(bytes.fromhex(hex_in))
    assert caught.value.reason == reason
    assert caught.value.offset == offset
    assert isinstance(caught.value, ProtocolError)


def test_offset_argument_starts_there_and_keeps_absolute_offsets():
    data = bytes.fromhex("AA00" "5A0107" "5A05")
    with pytest.raises(TlvError) as caught:
        decode_tlvs(data, offset=2)
    assert (caught.value.reason, caught.value.offset) == ("length_past_end", 6)
    assert decode_tlvs(data[:5], offset=2) == [Tlv(b"\x5a", b"\x07")]


def test_trailing_zero_padding_is_accepted_only_when_asked_and_only_as_a_tail():
    assert decode_tlvs(bytes.fromhex("5A0107000000"), allow_padding=True) == [Tlv(b"\x5a", b"\x07")]
    with pytest.raises(TlvError) as caught:
        decode_tlvs(bytes.fromhex("5A0107000001"), allow_padding=True)
    assert (caught.value.reason, caught.value.offset) == ("empty_tag", 3)
    assert decode_tlvs(b"", allow_padding=True) == []
    assert decode_tlvs(b"") == []


@pytest.mark.parametrize(
    ("tag", "value", "form"),
    [
        (b"", b"", 0),
        (b"\x9f", b"", 0),  # multi-byte tag without its second byte
        (b"\x9f\x82", b"", 0),  # continuation bit set on the last byte
        (b"\xdf\xdf\xdf\xdf\x01", b"", 0),
        (b"\x5a\x01", b"", 0),  # two tags
        (b"\x00", b"", 0),
        (b"\x5a", b"", 4),
        (b"\x5a", bytes(256), 1),
        (b"\x5a", bytes(0x10000), 2),
    ],
)
def test_building_an_item_that_cannot_be_encoded_raises(tag, value, form):
    with pytest.raises(TlvError) as caught:
        Tlv(tag, value, form)
    assert caught.value.reason == "bad_argument"


def test_tlv_helper_accepts_bytes_int_and_hex_tags_and_encodes_length_forms():
    assert tlv(0x9F02, b"\x01") == tlv("9f02", b"\x01") == tlv(b"\x9f\x02", b"\x01")
    assert tlv("84", bytes(2), length_form=2).encode() == bytes.fromhex("848200020000")
    assert tlv("84", bytes(2), length_form=1).encode() == bytes.fromhex("8481020000")
    assert tlv("84", bytes(2), length_form=3).encode() == bytes.fromhex("84830000020000")
    assert tlv("84", bytes(200)).encode()[:3] == bytes.fromhex("8481C8")
    assert tlv("84", bytes(300)).encode()[:4] == bytes.fromhex("8482012C")
    assert tlv("84", bytes(70000)).encode()[:5] == bytes.fromhex("8483011170")
    with pytest.raises(TlvError):
        tlv("zz", b"")
    with pytest.raises(TlvError):
        tlv(-1, b"")


def test_nesting_deeper_than_the_cap_is_refused_without_recursion():
    inner = Tlv(b"\xc1", b"\x00")
    for _ in range(1000):  # far deeper than the interpreter's recursion limit would allow
        inner = Tlv(b"\xe1", inner.encode())
    with pytest.raises(TlvError) as caught:
        list(walk([inner]))
    assert caught.value.reason == "too_deep"
    with pytest.raises(TlvError):
        find_tag([inner], 0xC1)
    shallow = Tlv(b"\xc1", b"\x00")
    for _ in range(MAX_NESTING_DEPTH - 1):
        shallow = Tlv(b"\xe1", shallow.encode())
    assert find_tag([shallow], 0xC1) == Tlv(b"\xc1", b"\x00")


def test_flat_decoding_of_many_items_is_one_pass():
    # 100,000 items in one 300 kB buffer: a quadratic decoder would not finish in a test run.
    data = bytes.fromhex("5A0107") * 100_000
    items = decode_tlvs(data)
    assert len(items) == 100_000
    assert encode_tlvs(items) == data


def test_random_bytes_either_decode_and_round_trip_or_raise_tlv_error():
    rng = random.Random(0x5EED)
    decoded = 0
    for _ in range(50_000):
        data = rng.randbytes(rng.randrange(0, 24))
        try:
            items = decode_tlvs(data)
        except TlvError as exc:
            assert exc.offset is not None
            assert 0 <= exc.offset <= len(data)
            continue
        decoded += 1
        assert encode_tlvs(items) == data
        for _depth, _item in _safe_walk(items):
            pass
    assert decoded > 1000  # the generator does reach the success path


def _safe_walk(items):
    try:
        yield from walk(items)
    except TlvError:
        return


_tags = st.one_of(
    st.integers(0x01, 0xFE).filter(lambda b: b & 0x1F != 0x1F).map(lambda b: bytes((b,))),
    st.tuples(
        st.integers(0, 7).map(lambda hi: (hi << 5) | 0x1F),
        st.lists(st.integers(0x80, 0xFF), max_size=2),
        st.integers(0x00, 0x7F),
    ).map(lambda t: bytes((t[0], *t[1], t[2]))),
)


@st.composite
def _items(draw):
    tag = draw(_tags)
    value = draw(st.binary(max_size=300))
    shortest = 0 if len(value) < 0x80 else (len(value).bit_length() + 7) // 8
    form = draw(st.sampled_from([0, *range(max(shortest, 1), 4)]))
    return Tlv(tag, value, form)


@settings(max_examples=300, deadline=None)
@given(st.lists(_items(), max_size=8))
def test_round_trip_of_arbitrary_items(items):
    data = encode_tlvs(items)
    again = decode_tlvs(data)
    assert encode_tlvs(again) == data
    assert [(i.tag, i.value) for i in again] == [(i.tag, i.value) for i in items]
