"""`send`: a template to one person, several, or an audience — prepared, confirmed, sent at
the provider's pace — and `send --resume` for a send that was interrupted or paused."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from typing import Any

from app.cli import EXIT_FAILED, EXIT_OK, CommandFailed, _print_json, _with_services
from app.config import Config
from app.domain.messages import Channel, MessageStatus
from app.services import Services
from app.services.audiences import GUARDIANS, TEACHERS, Audience, Recipient, recipients_by_ids
from app.services.messaging import BatchSummary, Progress

EXIT_USAGE = 2
SHOWN = 10  # people left out whose reason is printed


def add_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    send = commands.add_parser(
        "send",
        parents=[common],
        help="send a message template to people",
        description="Prepare a message from a template for the people named, show what will "
        "go, then send it. CONTACT is guardian:ID, teacher:ID, guardians, teachers, a phone "
        "number or an e-mail address; --to may be given several times.",
    )
    send.add_argument("--template", metavar="T", help="the template's name or number")
    send.add_argument("--to", action="append", default=[], metavar="CONTACT", help="who")
    send.add_argument(
        "--channel",
        choices=[channel.value for channel in Channel],
        help="send on this channel (default: each person's preferred one)",
    )
    send.add_argument("--grade", default="", help="with --to guardians: students of this grade")
    send.add_argument(
        "--lesson", default="", help="with --to guardians: students taking a lesson with this word"
    )
    send.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a value the template uses, e.g. --set lesson.starts='Tuesday at 15:00'",
    )
    send.add_argument("--yes", action="store_true", help="send without asking to confirm")
    send.add_argument(
        "--resume", type=int, metavar="SEND", help="go on with an interrupted or paused send"
    )
    send.add_argument("--json", action="store_true", help="print one JSON document")


def send(args: argparse.Namespace, config: Config) -> int:
    if args.resume is None and (not args.template or not args.to):
        print("send needs --template and --to (or --resume SEND).", file=sys.stderr)
        return EXIT_USAGE

    async def run(services: Services) -> int:
        messaging = services.messaging
        if args.resume is not None:
            batch = await messaging.batch(args.resume)
        else:
            batch = await _prepare(services, args)
            if not args.json:
                _print_prepared(batch)
                left_out = [
                    message
                    for message in await messaging.messages(batch.id)
                    if message.status is not MessageStatus.PREPARED
                ]
                for message in left_out[:SHOWN]:
                    print(f"  {message.recipient}: {message.error}")
                if len(left_out) > SHOWN:
                    print(f"  … and {len(left_out) - SHOWN} more (the Messages page lists them).")
            if batch.waiting == 0:
                raise CommandFailed("Nothing can be sent to these people; see the reasons above.")
            if not _confirmed(args, batch):
                await messaging.cancel_prepared(batch.id)
                raise CommandFailed("Not sent.")
        cancel = asyncio.Event()
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signal.SIGINT, cancel.set)
        done = await messaging.send(batch.id, progress=_progress_printer(args), cancel=cancel)
        if args.json:
            _print_json(done.as_json())
        else:
            _print_done(done)
        delivered = done.count(MessageStatus.QUEUED, MessageStatus.SENT, MessageStatus.DELIVERED)
        return EXIT_OK if done.status == "done" and (delivered or not done.total) else EXIT_FAILED

    return int(_with_services(config, run))


async def _prepare(services: Services, args: argparse.Namespace) -> BatchSummary:
    channel = Channel(args.channel) if args.channel else None
    audience: Audience | None = None
    people: list[Recipient] = []
    for contact in args.to:
        text = contact.strip()
        kind, _, number = text.partition(":")
        if text in (GUARDIANS, TEACHERS):
            audience = Audience(who=text, grade=args.grade, lesson=args.lesson)
        elif kind in ("guardian", "teacher") and number.isdigit():
            people += await services.db.read(recipients_by_ids, kind, [int(number)])
        else:
            people.append(_raw(text, channel))
    if (args.grade or args.lesson) and audience is None:
        raise CommandFailed("--grade and --lesson narrow --to guardians; add it.")
    return await services.messaging.prepare(
        args.template if not args.template.isdigit() else int(args.template),
        audience,
        recipients=people,
        channel=channel,
        created_by="command line",
        data=_values(args.set),
    )


def _raw(address: str, channel: Channel | None) -> Recipient:
    """Someone given by their address alone."""
    is_email = "@" in address
    return Recipient(
        kind="",
        id=0,
        name=address,
        email=address if is_email else "",
        phone="" if is_email else address,
        preferred_channel=(channel or (Channel.EMAIL if is_email else Channel.SMS)).value,
        language="en",
    )


def _values(pairs: list[str]) -> dict[str, Any]:
    """--set a.b=c pairs as nested template data."""
    data: dict[str, Any] = {}
    for pair in pairs:
        name, equals, value = pair.partition("=")
        if not equals or not name.strip():
            raise CommandFailed(f"--set takes NAME=VALUE, not {pair!r}.")
        *path, last = name.strip().split(".")
        node = data
        for part in path:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise CommandFailed(f"--set {name}: {part} is already a value.")
        node[last] = value
    return data


def _confirmed(args: argparse.Namespace, batch: BatchSummary) -> bool:
    if args.yes or batch.waiting <= 1:
        return True
    if not sys.stdin.isatty():
        raise CommandFailed(
            f"This would send {batch.waiting} messages; add --yes to send them without asking."
        )
    answer = input(f"Send {batch.waiting} messages? [y/N] ")
    return answer.strip().lower() in ("y", "yes")


def _progress_printer(args: argparse.Namespace) -> Any:
    if args.json or not sys.stderr.isatty():
        return None

    def show(progress: Progress) -> None:
        print(f"\rSent {progress.done} of {progress.total}", end="", file=sys.stderr, flush=True)

    return show


def _print_prepared(batch: BatchSummary) -> None:
    channels = ", ".join(f"{count} {name}" for name, count in sorted(batch.channels.items()))
    print(f"Send {batch.id}: {batch.title} to {batch.audience} ({channels}).")
    for status, count in sorted(batch.counts.items()):
        if status != MessageStatus.PREPARED.value:
            print(f"  {count} {status.replace('_', ' ')}")
    if batch.segments:
        print(f"  {batch.segments} SMS parts")


def _print_done(batch: BatchSummary) -> None:
    counts = ", ".join(
        f"{count} {status.replace('_', ' ')}" for status, count in sorted(batch.counts.items())
    )
    print(f"Send {batch.id} is {batch.status}: {counts}.")
    if batch.message:
        print(batch.message)
