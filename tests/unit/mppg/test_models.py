"""MPPG data definitions: the spec's rules on what we send, leniency on what we receive."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from bridge.mppg.definition import (
    check_request_id,
    merged_definition,
    parse_definition,
    parse_list_query,
)
from bridge.mppg.errors import ErrorCode, MppgInputError
from bridge.mppg.models import (
    PaymentRequestData,
    PaymentRequestDetail,
    PaymentRequestStatus,
    PaymentRequestSummaryListInfo,
    TransactionSummary,
    status_name,
)

# The spec's §4.4 example response, as MPPG writes it (naive and zoned times mixed).
DETAIL_EXAMPLE = {
    "magTranID": "11b8e33b-ac07-4614-9c98-cc98e145dc82",
    "paymentRequestID": "84bad434-f162-4ea8-af26-58a518c4a56c",
    "paymentRequestMerchantID": 20,
    "paymentLink": "https://pay.example/mppg?token=84bad434&src=1",
    "websocketToken": "wss://push.example/client/hubs/H?access_token=SECRET-TOKEN",
    "definition": {
        "currentUsageCount": 0, "dateCreated": "2022-03-30T10:41:41.803Z",
        "transactionType": 1, "customerTranID": "adfadsf", "customerTranRef": "adfad",
        "amount": 1, "taxAmount": 1, "taxPercent": 1, "additionalInfo": None,
        "miscData": "dfads", "processorName": "Jet Pay", "promptForTax": True,
        "promptForTips": True, "termsAndTransactionInfo": "sample conditions",
        "usageCountLimit": 30, "isEnabled": True,
        "activationDate": "2022-03-30T10:41:17.143Z", "expirationDate": "2022-05-29T10:41:17.143",
    },
    "status": 2,
    "transactions": [{"paymentRequestId": "84bad434-f162-4ea8-af26-58a518c4a56c",
                      "transactionId": "1c121656", "transactionDate": "2022-04-21T02:09:48",
                      "authorizedAmount": 0, "approved": False}],
}


def test_detail_example_parses_and_round_trips_in_camel_case():
    detail = PaymentRequestDetail.model_validate(DETAIL_EXAMPLE)
    assert detail.payment_request_id == "84bad434-f162-4ea8-af26-58a518c4a56c"
    assert detail.definition is not None and detail.definition.usage_count_limit == 30
    assert detail.transactions[0].approved is False
    wire = detail.to_wire()
    assert wire["paymentRequestID"] == DETAIL_EXAMPLE["paymentRequestID"]
    assert wire["definition"]["amount"] == 1.0  # a JSON number, not a string
    assert wire["transactions"][0]["paymentRequestId"] == DETAIL_EXAMPLE["paymentRequestID"]
    json.dumps(wire)


def test_tokens_and_transaction_responses_stay_out_of_repr():
    detail = PaymentRequestDetail.model_validate(DETAIL_EXAMPLE)
    assert "SECRET-TOKEN" not in repr(detail)
    summary = TransactionSummary.model_validate(
        {"transactionResponse": "PAN=4111", "detail": DETAIL_EXAMPLE["transactions"][0]})
    assert "4111" not in repr(summary)


def test_responses_ignore_key_case_and_unknown_fields():
    listing = PaymentRequestSummaryListInfo.model_validate({
        "MagTranID": "m", "TotalRecordsAvailable": 1, "somethingNew": True,
        "Requests": [{"PaymentRequestID": "a-1", "Amount": 10, "Status": 4}],
    })
    assert listing.total_records_available == 1
    assert listing.requests[0].payment_request_id == "a-1"
    assert listing.requests[0].amount == Decimal(10)


def test_status_names():
    assert [status_name(s) for s in PaymentRequestStatus] == [
        "Disabled", "Pending", "Active", "Expired", "Paid"]
    assert status_name(9) == "Unknown(9)"


def test_definition_defaults_and_wire_shape():
    definition = parse_definition({"amount": "12.50", "usage_count_limit": 1},
                                  default_processor="VANTIV TEST")
    assert definition.to_wire() == {"transactionType": 1, "amount": 12.5,
                                    "processorName": "VANTIV TEST", "usageCountLimit": 1,
                                    "isEnabled": True}
    # A processor given in the request wins over the configured default.
    named = parse_definition({"amount": 1, "processorName": "Jet Pay"}, default_processor="X")
    assert named.processor_name == "Jet Pay"


def test_spec_example_request_is_accepted_as_it_is():
    # §3.3 example, equal activation and expiration dates included.
    parse_definition({
        "transactionType": 1, "customerTranID": "05062022CSTID",
        "customerTranRef": "05062022CSTIDRef", "amount": 1.00, "taxAmount": 1.00,
        "taxPercent": 1.00, "additionalInfo": None, "miscData": "testInfo",
        "processorName": "VANTIV TEST", "promptForTax": True, "promptForTips": True,
        "termsAndTransactionInfo": "VANTIV TESTInfo", "usageCountLimit": 0, "isEnabled": True,
        "activationDate": "2022-05-06T09:42:46.000Z", "expirationDate": "2022-05-06T09:42:46.000Z",
    })


@pytest.mark.parametrize("body", [
    {"amount": 1, "expirationDate": "2001-01-01T00:00:00Z"},                 # in the past
    {"amount": 1, "activationDate": "2022-05-06T10:00:00Z",
     "expirationDate": "2022-05-06T09:00:00Z"},                             # MPPG judges order
    {"amount": 1, "expirationDate": "2022-05-06T09:00:00"},                  # no zone
    {"amount": 1, "activationDate": "2022-04-21T23:05:01.743"},              # a list row's form
    {"amount": -1},                                                          # no rule stated
    {"amount": 1, "taxPercent": 300},                                        # no rule stated
    {"amount": 1, "customerTranRef": 123456},                                # §7.4: Integer
])
def test_rules_the_spec_does_not_state_are_left_to_mppg(body):
    parse_definition(body)


def test_spec_example_request_with_additional_info():
    parse_definition({
        "transactionType": 1, "customerTranID": "05062022CSTID",
        "customerTranRef": "05062022CSTIDRef", "amount": 1.00, "taxAmount": 1.00,
        "taxPercent": 1.00, "additionalInfo": [{"key": "lane", "value": "3"}],
        "miscData": "testInfo", "processorName": "VANTIV TEST", "promptForTax": True,
        "promptForTips": True, "termsAndTransactionInfo": "VANTIV TESTInfo",
        "usageCountLimit": 0, "isEnabled": True,
        "activationDate": "2022-05-06T09:42:46.000Z", "expirationDate": "2022-06-06T09:42:46Z",
    })


@pytest.mark.parametrize(("body", "code"), [
    ({"amount": 1.234}, ErrorCode.INVALID_AMOUNT),
    ({"amount": 0.1 + 0.2}, ErrorCode.INVALID_AMOUNT),
    ({"amount": "NaN"}, ErrorCode.INVALID_AMOUNT),
    ({}, ErrorCode.INVALID_AMOUNT),
    ({"amount": 1, "taxAmount": 0.001}, ErrorCode.INVALID_TAX_AMOUNT),
    ({"amount": 1, "transactionType": 2}, ErrorCode.INVALID_TRANSACTION_TYPE),
    ({"amount": 1, "transactionType": True}, ErrorCode.INVALID_TRANSACTION_TYPE),
    ({"amount": 1, "usageCountLimit": -1}, ErrorCode.INVALID_USAGE_COUNT_LIMIT),
    ({"amount": 1, "usageCountLimit": True}, ErrorCode.INVALID_USAGE_COUNT_LIMIT),
    ({"amount": 1, "usageCountLimit": 1.5}, ErrorCode.INVALID_USAGE_COUNT_LIMIT),
    ({"amount": 1, "usageCountLimit": 2_147_483_648}, ErrorCode.INVALID_USAGE_COUNT_LIMIT),
    ({"amount": 1, "customerTranID": "x" * 257}, ErrorCode.INVALID_CUSTOMER_TRAN_ID),
    ({"amount": 1, "customerTranRef": "x" * 257}, ErrorCode.INVALID_CUSTOMER_TRAN_REF),
    ({"amount": 1, "miscData": "x" * 257}, ErrorCode.INVALID_MISC_DATA),
    ({"amount": 1, "processorName": "x" * 129}, ErrorCode.INVALID_PROCESSOR_NAME),
    ({"amount": 1, "termsAndTransactionInfo": [5]}, ErrorCode.INVALID_TERMS),
    ({"amount": 1, "expirationDate": "next week"}, ErrorCode.INVALID_EXPIRATION_DATE),
    ({"amount": 1, "ammount": 2}, ErrorCode.INVALID_DEFINITION),
    ({"amount": 1, "isEnabled": "maybe"}, ErrorCode.INVALID_DEFINITION),
])
def test_definition_rules_give_the_documented_codes(body, code):
    with pytest.raises(MppgInputError) as info:
        parse_definition(body)
    assert info.value.code == code
    assert info.value.source == "bridge"  # MPPG's code, but MPPG never saw it


def test_limits_are_inclusive():
    parse_definition({"amount": 1, "customerTranID": "x" * 256, "processorName": "p" * 128,
                      "usageCountLimit": 2_147_483_647})


def test_definition_must_be_an_object():
    with pytest.raises(MppgInputError) as info:
        parse_definition([1, 2])
    assert info.value.code == ErrorCode.INPUT_FORMAT


def test_list_query_params_and_date_forms():
    query = parse_list_query({"ds": 20220413, "de": "2022-04-21", "ps": 20, "pn": 1, "st": 4})
    assert query.to_params() == {"ds": "20220413", "de": "20220421", "ps": "20", "pn": "1",
                                 "st": "4"}
    assert parse_list_query({}).to_params() == {}


@pytest.mark.parametrize(("body", "code"), [
    ({"ds": 20220231}, ErrorCode.INVALID_START_DATE),
    ({"de": "yesterday"}, ErrorCode.INVALID_END_DATE),
    ({"ds": 20220422, "de": 20220421}, ErrorCode.START_AFTER_END),
    ({"ps": 0}, ErrorCode.INVALID_PAGE_SIZE),
    ({"ps": 1001}, ErrorCode.INVALID_PAGE_SIZE),
    ({"pn": 0}, ErrorCode.INVALID_PAGE_NUMBER),
    ({"st": 5}, ErrorCode.INVALID_STATUS),
    ({"st": True}, ErrorCode.INVALID_STATUS),
    ({"ps": True}, ErrorCode.INVALID_PAGE_SIZE),
    ({"sort": "asc"}, ErrorCode.INPUT_FORMAT),
])
def test_list_query_rules(body, code):
    with pytest.raises(MppgInputError) as info:
        parse_list_query(body)
    assert info.value.code == code


@pytest.mark.parametrize("value", ["", "../etc", "a/b", "a b", None, 5, "x" * 65])
def test_request_ids_must_be_safe_path_and_topic_segments(value):
    with pytest.raises(MppgInputError) as info:
        check_request_id(value)
    assert info.value.code == ErrorCode.INVALID_PAYMENT_REQUEST_ID


def test_request_id_accepts_a_guid():
    assert check_request_id("046adde9-acc0-45d0-ae65-dd3e0472ded8")


def test_update_merges_over_the_current_definition():
    current = PaymentRequestDetail.model_validate(DETAIL_EXAMPLE).definition
    merged = merged_definition(current, {"amount": 2.5})
    wire = merged.to_wire()
    assert wire["amount"] == 2.5
    assert wire["usageCountLimit"] == 30 and wire["isEnabled"] is True
    assert wire["customerTranRef"] == "adfad" and wire["processorName"] == "Jet Pay"
    assert "currentUsageCount" not in wire and "dateCreated" not in wire
    disabled = PaymentRequestData.model_validate({**DETAIL_EXAMPLE["definition"],
                                                 "isEnabled": False, "customerTranRef": 42})
    assert merged_definition(disabled, {"miscData": "x"}).is_enabled is False
    assert merged_definition(disabled, {"miscData": "x"}).customer_tran_ref == "42"


@pytest.mark.parametrize(("changes", "code"), [
    ({"amount": 1.234}, ErrorCode.INVALID_AMOUNT),
    ({"ammount": 2}, ErrorCode.INVALID_DEFINITION),
    ({"usageCountLimit": -3}, ErrorCode.INVALID_USAGE_COUNT_LIMIT),
])
def test_update_changes_are_checked(changes, code):
    current = PaymentRequestDetail.model_validate(DETAIL_EXAMPLE).definition
    with pytest.raises(MppgInputError) as info:
        merged_definition(current, changes)
    assert info.value.code == code
