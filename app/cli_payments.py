"""`charge`, `payments list` and `refund`: taking and refunding payments from the command line.

Amounts are typed as people write them in the school's locale ("1,250.50" in en_US) and
refused when they have more decimals than the currency, are negative or zero. A charge without
`--key` gets one from what it is for: an invoice's charge is keyed by the invoice (and how many
of its payments failed before), so running the same command twice never charges twice, while
a charge for an amount gets a fresh key and is a new payment each time.
"""

from __future__ import annotations

import argparse
import uuid
from datetime import date
from typing import Any

from app.cli import EXIT_FAILED, EXIT_OK, CommandFailed, _print_json, _with_services
from app.config import Config
from app.domain.money import Money, MoneyError
from app.services import Services
from app.services.payments import FAILED, Payment


def add_parsers(commands: Any, common: argparse.ArgumentParser) -> None:
    charge = commands.add_parser(
        "charge", parents=[common], help="charge a payer's saved payment method"
    )
    what = charge.add_mutually_exclusive_group(required=True)
    what.add_argument("--invoice", type=int, metavar="ID", help="what is owed on this invoice")
    what.add_argument("--amount", metavar="DEC", help="an amount, e.g. 120.50")
    charge.add_argument("--currency", metavar="CUR", help="with --amount: e.g. USD")
    charge.add_argument("--payer", type=int, metavar="ID", help="with --amount: the guardian")
    charge.add_argument("--method", default="card", help="the saved method to use (card)")
    charge.add_argument("--key", help="idempotency key: the same key never charges twice")
    charge.add_argument("--json", action="store_true", help="print one JSON document")

    payments = commands.add_parser("payments", parents=[common], help="payments taken")
    payment_commands = payments.add_subparsers(dest="payments_command", required=True)
    listing = payment_commands.add_parser("list", parents=[common], help="the latest payments")
    listing.add_argument("--limit", type=int, default=50, help="how many (default 50)")
    listing.add_argument("--json", action="store_true", help="print one JSON document")

    billing = commands.add_parser(
        "billing-run",
        parents=[common],
        help="charge every invoice due (or finish the run that was interrupted)",
    )
    billing.add_argument(
        "--due-before", metavar="DATE", help="invoices due on or before (YYYY-MM-DD; today)"
    )
    billing.add_argument("--prepare", action="store_true", help="only show what would be charged")
    billing.add_argument(
        "--concurrency", type=int, default=4, help="charges under way at once (default 4)"
    )
    billing.add_argument("--json", action="store_true", help="print one JSON document")

    refund = commands.add_parser("refund", parents=[common], help="refund a payment")
    refund.add_argument("id", type=int, help="the payment's number (see `payments list`)")
    refund.add_argument("--amount", metavar="DEC", help="part of it (default: all that is left)")
    refund.add_argument("--json", action="store_true", help="print one JSON document")


def charge(args: argparse.Namespace, config: Config) -> int:
    async def run(services: Services) -> int:
        locale = str(services.settings.get("school.locale"))
        if args.invoice is not None:
            if args.currency or args.payer is not None:
                raise CommandFailed(
                    "--invoice takes its amount, currency and payer from the invoice."
                )
            due = await services.billing.invoice_due(args.invoice)
            payer, amount, key = due.guardian_id, due.amount, due.key
            description = f"Invoice {due.number}"
        else:
            if not args.currency or args.payer is None:
                raise CommandFailed("--amount needs --currency and --payer.")
            try:
                amount = Money.parse(args.amount, args.currency.upper(), locale=locale)
            except MoneyError as exc:
                raise CommandFailed(str(exc)) from None
            payer, key = args.payer, f"cli:{uuid.uuid4().hex}"
            description = ""
        payment = await services.routing.charge(
            services.payments,
            guardian_id=payer,
            amount=amount,
            method=args.method,
            idempotency_key=args.key or key,
            invoice_id=args.invoice,
            description=description,
        )
        if args.json:
            _print_json(payment_json(payment, locale))
        else:
            _print_payment(payment, locale)
        return EXIT_OK if payment.status != FAILED else EXIT_FAILED

    return _with_services(config, run)


def payments(args: argparse.Namespace, config: Config) -> int:
    async def run(services: Services) -> int:
        if args.limit < 1:
            raise CommandFailed("--limit must be at least 1.")
        locale = str(services.settings.get("school.locale"))
        found = await services.payments.payments(args.limit)
        if args.json:
            _print_json([payment_json(payment, locale) for payment in found])
        elif not found:
            print("No payments yet: `switchboard charge` takes one.")
        for payment in [] if args.json else found:
            gateway = f"connection {payment.connection_id}" if payment.connection_id else "-"
            print(
                f"{payment.id:>6}  {payment.amount.format(locale):>14}  {payment.status:<10}  "
                f"{gateway}  {payment.gateway_id}"
            )
        return EXIT_OK

    return _with_services(config, run)


def refund(args: argparse.Namespace, config: Config) -> int:
    async def run(services: Services) -> int:
        locale = str(services.settings.get("school.locale"))
        payment = await services.payments.payment(args.id)
        amount = None
        if args.amount is not None:
            try:
                amount = Money.parse(args.amount, payment.amount.currency, locale=locale)
            except MoneyError as exc:
                raise CommandFailed(str(exc)) from None
        made = await services.payments.refund(args.id, amount)
        if args.json:
            _print_json(
                {
                    "id": made.id,
                    "payment_id": made.payment_id,
                    "amount": made.amount.for_input(),
                    "currency": made.amount.currency,
                    "status": made.status,
                    "gateway_id": made.gateway_id,
                    "failure": made.failure_message,
                }
            )
        else:
            print(f"Refund of {made.amount.format(locale)}: {made.status}.")
            if made.failure_message:
                print(made.failure_message)
        return EXIT_OK if made.status != FAILED else EXIT_FAILED

    return _with_services(config, run)


def payment_json(payment: Payment, locale: str) -> dict[str, Any]:
    return {
        "id": payment.id,
        "reference": payment.reference,
        "idempotency_key": payment.idempotency_key,
        "amount": payment.amount.for_input(),
        "currency": payment.amount.currency,
        "shown": payment.amount.format(locale),
        "method": payment.method,
        "status": payment.status,
        "connection_id": payment.connection_id,
        "gateway_id": payment.gateway_id,
        "fee": payment.fee.for_input() if payment.fee else None,
        "refunded": payment.refunded.for_input(),
        "failure": None
        if payment.failure is None
        else {
            "kind": payment.failure.kind.value,
            "code": payment.failure.code,
            "message": payment.failure.message,
        },
        "invoice_id": payment.invoice_id,
        "guardian_id": payment.guardian_id,
        "attempts": [
            {
                "number": attempt.number,
                "reference": attempt.reference,
                "connection_id": attempt.connection_id,
                "status": attempt.status,
                "gateway_id": attempt.gateway_id,
                "failure": attempt.failure.message if attempt.failure else None,
                "why": attempt.why.get("explanation", ""),
            }
            for attempt in payment.attempts
        ],
    }


def _print_payment(payment: Payment, locale: str) -> None:
    print(f"Payment {payment.id}: {payment.amount.format(locale)} {payment.status}.")
    for attempt in payment.attempts:
        outcome = attempt.failure.message if attempt.failure else attempt.status
        print(f"  attempt {attempt.number} at connection {attempt.connection_id}: {outcome}")
        if attempt.number == 1 and attempt.why.get("explanation"):
            print(f"    {attempt.why['explanation']}")
    last = payment.attempts[-1].failure if payment.attempts else None
    if payment.status == FAILED and payment.failure is not None and payment.failure != last:
        print(payment.failure.message)


def billing_run(args: argparse.Namespace, config: Config) -> int:
    async def run(services: Services) -> int:
        locale = str(services.settings.get("school.locale"))
        if not 1 <= args.concurrency <= 32:
            raise CommandFailed("--concurrency must be between 1 and 32.")
        billing = services.billing
        current = await billing.unfinished()
        if current is None:
            try:
                due = date.fromisoformat(args.due_before) if args.due_before else date.today()
            except ValueError:
                raise CommandFailed(
                    f"{args.due_before!r} is not a date; write it like 2026-12-31."
                ) from None
            current = await billing.prepare(due)
        elif not args.json:
            print(
                f"Finishing billing run {current.id} ({current.done} of "
                f"{current.total_items} invoices done)."
            )
        if args.prepare:
            _billing_report(current, await billing.items(current.id), locale, args.json)
            return EXIT_OK
        shown = [0]

        def progress(state: Any) -> None:
            step = max(1, state.total_items // 10)
            if not args.json and state.done // step != shown[0] // step:
                print(f"  {state.done} of {state.total_items} invoices done", flush=True)
            shown[0] = state.done

        finished = await billing.run(current.id, concurrency=args.concurrency, progress=progress)
        _billing_report(finished, await billing.items(finished.id), locale, args.json)
        return EXIT_OK

    return _with_services(config, run)


def _billing_report(run: Any, items: list[Any], locale: str, as_json: bool) -> None:
    if as_json:
        _print_json(
            {
                "id": run.id,
                "due_before": run.due_before.isoformat(),
                "status": run.status,
                "counts": run.counts,
                "totals": {currency: money.for_input() for currency, money in run.totals.items()},
                "items": [
                    {
                        "invoice_id": item.invoice_id,
                        "invoice": item.invoice_number,
                        "amount": item.amount.for_input(),
                        "currency": item.amount.currency,
                        "status": item.status,
                        "payment_id": item.payment_id,
                        "message": item.message,
                    }
                    for item in items
                ],
            }
        )
        return
    totals = ", ".join(money.format(locale) for money in run.totals.values()) or "nothing"
    counts = ", ".join(f"{count} {status}" for status, count in sorted(run.counts.items()))
    print(f"Billing run {run.id} ({run.status}), invoices due by {run.due_before}: {totals}.")
    print(f"  {counts or 'no invoices are due'}")
    for item in items:
        if item.message:
            print(f"  {item.invoice_number}: {item.status}: {item.message}")
