"""``magtek-bridge payreq``: create, list, get and update payment requests straight from the
API. ``update`` changes only the fields given (a read-modify-write of the current
definition, as the MQTT service does).

Uses the config's ``[mppg]`` section (``base_url`` and credentials; ``enabled`` need not be
true, that only concerns the daemon). Only argparse is imported at module level so the rest
of the CLI stays light; httpx loads when a payreq command runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bridge.config import Settings
    from bridge.mppg.client import MppgClient
    from bridge.mppg.models import PaymentRequestDetail, PaymentRequestSummaryListInfo


def add_payreq_parser(sub: Any, add_config_args: Callable[[argparse.ArgumentParser], None]
                      ) -> None:
    """Add ``payreq {create,list,get,update}`` to the top-level subparsers."""
    payreq = sub.add_parser("payreq", help="MPPG payment requests (uses the [mppg] config)")
    ops = payreq.add_subparsers(dest="payreq_command", required=True)

    create = ops.add_parser("create", help="create a payment request; prints its link")
    add_config_args(create)
    create.add_argument("--amount", required=True, help="e.g. 12.50 (at most 2 decimals)")
    create.add_argument("--tax-amount", help="tax as an amount, e.g. 1.05")
    create.add_argument("--tax-percent", help="tax as a percentage, e.g. 8.25")
    create.add_argument("--usage-limit", type=int, default=1,
                        help="successful payments before it is Paid; 0 = unlimited "
                             "(default: 1)")
    create.add_argument("--customer-tran-id", help="your order or transaction id")
    create.add_argument("--customer-tran-ref", help="your reference text")
    create.add_argument("--processor", help="processor name (default: mppg.processor_name, "
                                            "else the merchant's)")
    create.add_argument("--misc-data", help="free text stored with the request")
    create.add_argument("--terms", help="terms and transaction information")
    create.add_argument("--prompt-tax", action=argparse.BooleanOptionalAction,
                        help="the payment page asks for tax")
    create.add_argument("--prompt-tips", action=argparse.BooleanOptionalAction,
                        help="the payment page asks for a tip")
    create.add_argument("--disabled", action="store_true", help="create it disabled")
    create.add_argument("--activation", metavar="ISO8601", help="e.g. 2025-01-31T09:00:00Z")
    create.add_argument("--expiration", metavar="ISO8601",
                        help="when the link stops working, e.g. 2025-02-28T23:59:59Z")
    create.add_argument("--info", action="append", default=[], metavar="KEY=VALUE",
                        help="additional info (repeatable)")
    create.add_argument("--json", action="store_true", help="print MPPG's whole answer")

    listing = ops.add_parser("list", help="list payment requests")
    add_config_args(listing)
    listing.add_argument("--from", dest="ds", metavar="YYYYMMDD",
                         help="created on or after (default: 60 days ago)")
    listing.add_argument("--to", dest="de", metavar="YYYYMMDD", help="created on or before")
    listing.add_argument("--page-size", dest="ps", type=int, help="1..1000 (default 20)")
    listing.add_argument("--page", dest="pn", type=int, help="page number (default 1)")
    listing.add_argument("--status", dest="st",
                         help="0-4 or disabled/pending/active/expired/paid")
    listing.add_argument("--json", action="store_true", help="print MPPG's whole answer")

    get = ops.add_parser("get", help="show one payment request and its transactions")
    add_config_args(get)
    get.add_argument("id", help="the paymentRequestID")
    get.add_argument("--json", action="store_true",
                     help="print MPPG's whole answer (including the WebSocket token)")

    update = ops.add_parser("update", help="change some fields of a payment request (the "
                                           "others keep their values)")
    add_config_args(update)
    update.add_argument("id", help="the paymentRequestID")
    update.add_argument("--amount", help="new amount, e.g. 12.50")
    update.add_argument("--tax-amount", help="new tax amount")
    update.add_argument("--tax-percent", help="new tax percentage")
    update.add_argument("--usage-limit", type=int, help="0 = unlimited")
    update.add_argument("--customer-tran-id", help="new order or transaction id")
    update.add_argument("--customer-tran-ref", help="new reference text")
    update.add_argument("--processor", help="new processor name")
    update.add_argument("--misc-data", help="new free text")
    update.add_argument("--terms", help="new terms and transaction information")
    update.add_argument("--prompt-tax", action=argparse.BooleanOptionalAction,
                        help="ask the payer for tax (or not)")
    update.add_argument("--prompt-tips", action=argparse.BooleanOptionalAction,
                        help="ask the payer for a tip (or not)")
    state = update.add_mutually_exclusive_group()
    state.add_argument("--enable", dest="enabled", action="store_true", default=None,
                       help="enable the request")
    state.add_argument("--disable", dest="enabled", action="store_false",
                       help="disable the request (its link stops working)")
    update.add_argument("--activation", metavar="ISO8601", help="new activation time")
    update.add_argument("--expiration", metavar="ISO8601", help="new expiration time")
    update.add_argument("--info", action="append", default=[], metavar="KEY=VALUE",
                        help="additional info (repeatable; replaces the current list)")
    update.add_argument("--json", action="store_true", help="print MPPG's whole answer")


def _definition_body(args: argparse.Namespace) -> dict[str, Any]:
    """The fields the arguments give (create: all it needs; update: only the changes)."""
    body: dict[str, Any] = {}
    if args.payreq_command == "create":
        body = {"amount": args.amount, "usageCountLimit": args.usage_limit,
                "isEnabled": not args.disabled}
    else:
        changes = {"amount": args.amount, "usageCountLimit": args.usage_limit,
                   "isEnabled": args.enabled}
        body = {k: v for k, v in changes.items() if v is not None}
    optional = {
        "taxAmount": args.tax_amount, "taxPercent": args.tax_percent,
        "customerTranID": args.customer_tran_id, "customerTranRef": args.customer_tran_ref,
        "processorName": args.processor, "miscData": args.misc_data,
        "termsAndTransactionInfo": args.terms, "promptForTax": args.prompt_tax,
        "promptForTips": args.prompt_tips, "activationDate": args.activation,
        "expirationDate": args.expiration,
    }
    body.update({k: v for k, v in optional.items() if v is not None})
    if args.info:
        pairs = [item.partition("=") for item in args.info]
        body["additionalInfo"] = [{"key": k, "value": v} for k, _, v in pairs]
    return body


def _list_filters(args: argparse.Namespace) -> dict[str, Any]:
    from bridge.mppg.models import PaymentRequestStatus  # noqa: PLC0415

    filters = {k: getattr(args, k) for k in ("ds", "de", "ps", "pn", "st")}
    status = filters["st"]
    if isinstance(status, str) and not status.isdigit():
        names = {s.name.lower(): int(s) for s in PaymentRequestStatus}
        filters["st"] = names.get(status.lower(), status)
    return {k: v for k, v in filters.items() if v is not None}


def _print_detail(detail: PaymentRequestDetail) -> None:
    from bridge.mppg.models import status_name  # noqa: PLC0415

    d = detail.definition
    print(f"paymentRequestID  {detail.payment_request_id}")
    print(f"status            {status_name(detail.status)}")
    print(f"paymentLink       {detail.payment_link or '-'}")
    if d is not None:
        print(f"enabled           {'yes' if d.is_enabled is not False else 'no'}")
        print(f"amount            {d.amount}")
        print(f"usage             {d.current_usage_count}/{d.usage_count_limit or 'unlimited'}")
        print(f"expires           {d.expiration_date.isoformat() if d.expiration_date else '-'}")
    for tx in detail.transactions:
        outcome = "approved" if tx.approved else "declined"
        print(f"transaction       {tx.transaction_id}  {outcome}  {tx.authorized_amount}")
    # The WebSocket token is a bearer URL: shown only with --json, on purpose.


def _print_list(listing: PaymentRequestSummaryListInfo) -> None:
    from bridge.mppg.models import status_name  # noqa: PLC0415

    for row in listing.requests:
        created = row.date_created.date().isoformat() if row.date_created else "-"
        usage = f"{row.current_usage_count}/{row.usage_count_limit}"
        print(f"{row.payment_request_id}  {status_name(row.status):<9} {row.amount!s:>10}  "
              f"{usage:>7}  {created}  {row.customer_tran_id or ''}")
    total = listing.total_records_available
    print(f"{len(listing.requests)} shown"
          + (f", {total} in the date range" if total is not None else ""))


def _create(client: MppgClient, args: argparse.Namespace,
            settings: Settings) -> PaymentRequestDetail:
    """Create as the MQTT service does (``Operations``, one code path): after an ambiguous
    failure (MPPG timed out, or answered something unreadable) the request is looked up by
    ``customerTranID`` before failure is reported, so a retry does not pay twice; the link
    is fetched when the create answer has none. Within ``mppg.operation_timeout``."""
    from bridge.mppg.operations import Deadline, Operations  # noqa: PLC0415

    operations = Operations(client, default_processor=settings.mppg.processor_name)
    outcome = operations.run("create", _definition_body(args),
                             Deadline(settings.mppg.operation_timeout))
    assert outcome.detail is not None  # create always answers a request
    notes = outcome.notes or {}
    if notes.get("recovered"):
        print("note: MPPG's answer to the create was lost or unreadable; the request it made "
              "was found by customerTranID (not created twice)", file=sys.stderr)
    if "linkError" in notes:
        error = notes["linkError"]
        print(f"note: created, but its payment link could not be fetched "
              f"({error.get('code')}: {error.get('message')}); 'payreq get' shows it",
              file=sys.stderr)
    return outcome.detail


def run_payreq(args: argparse.Namespace, settings: Settings) -> int:
    """Run one payreq command; MPPG errors propagate (the CLI prints them, exit 1)."""
    from bridge.mppg.client import MppgClient  # noqa: PLC0415
    from bridge.mppg.definition import merged_definition, parse_list_query  # noqa: PLC0415

    with MppgClient.from_settings(settings.mppg) as client:
        if args.payreq_command == "list":
            listing = client.list_requests(parse_list_query(_list_filters(args)))
            if args.json:
                print(json.dumps(listing.to_wire(), indent=2))
            else:
                _print_list(listing)
            return 0
        if args.payreq_command == "create":
            detail = _create(client, args, settings)
        elif args.payreq_command == "update":
            current = client.get(args.id)
            changes = _definition_body(args)
            if not changes:
                print("nothing to change (give --amount, --disable, ...)")
                return 2
            detail = client.update(args.id, merged_definition(current.definition, changes))
        else:
            detail = client.get(args.id)
    if args.json:
        print(json.dumps(detail.to_wire(), indent=2))
    else:
        _print_detail(detail)
    return 0


__all__ = ["add_payreq_parser", "run_payreq"]
