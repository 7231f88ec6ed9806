"""The command line: `switchboard [command] ...`; with no command it opens the desktop app.

Contract (DESIGN.md): `--json` prints exactly one JSON document on stdout; exit status 0 on
success, 1 on a failed operation, 2 on bad usage; errors go to stderr as one clear sentence.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from app import __version__
from app.config import Config, ConfigError, resolve_config
from app.domain import inbox
from app.domain.errors import SwitchboardError

EXIT_OK, EXIT_FAILED = 0, 1  # bad usage exits with 2, from argparse


class CommandFailed(SwitchboardError):
    """A command that could not do its job; the message is printed as is."""


def _global_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    default = argparse.SUPPRESS if suppress else None
    parser.add_argument(
        "--data-dir",
        metavar="DIR",
        default=default,
        help="folder for the database and logs (env SWITCHBOARD_DATA_DIR)",
    )
    parser.add_argument(
        "--db-url",
        metavar="URL",
        default=default,
        help="database to open, e.g. sqlite:///path/school.db (env SWITCHBOARD_DB_URL)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="switchboard",
        description="Switchboard: the integrations desk of a school.",
    )
    parser.add_argument("--version", action="version", version=f"switchboard {__version__}")
    _global_options(parser, suppress=False)
    # The same options are accepted after the command too: `switchboard doctor --data-dir X`.
    common = argparse.ArgumentParser(add_help=False)
    _global_options(common, suppress=True)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    gui = commands.add_parser("gui", parents=[common], help="open the desktop app (default)")
    gui.add_argument("--demo", action="store_true", help="explore with a demo school's data")

    doctor = commands.add_parser(
        "doctor", parents=[common], help="check that Switchboard can run on this computer"
    )
    doctor.add_argument("--json", action="store_true", help="print one JSON document")

    serve = commands.add_parser(
        "serve", parents=[common], help="run the engine without a window until stopped"
    )
    serve.add_argument("--host", help="address to listen on (default: the receiver setting)")
    serve.add_argument("--port", type=_port, help="port to listen on (0 picks a free one)")

    demo = commands.add_parser("demo", parents=[common], help="demo data")
    demo_commands = demo.add_subparsers(dest="demo_command", metavar="ACTION", required=True)
    seed = demo_commands.add_parser(
        "seed", parents=[common], help="fill an empty database with a demo school"
    )
    seed.add_argument("--json", action="store_true", help="print one JSON document")

    provider = commands.add_parser("provider", parents=[common], help="provider kinds")
    provider_commands = provider.add_subparsers(
        dest="provider_command", metavar="ACTION", required=True
    )
    kinds = provider_commands.add_parser(
        "kinds", parents=[common], help="the kinds of provider and the settings each needs"
    )
    kinds.add_argument("--json", action="store_true", help="print one JSON document")

    connection = commands.add_parser("connection", parents=[common], help="provider connections")
    connection_commands = connection.add_subparsers(
        dest="connection_command", metavar="ACTION", required=True
    )
    add = connection_commands.add_parser("add", parents=[common], help="connect a provider")
    add.add_argument("kind", help="a provider kind (see `provider kinds`)")
    add.add_argument("--name", required=True, help="what to call this connection")
    add.add_argument(
        "--set", action="append", default=[], metavar="FIELD=VALUE", help="a setting (repeatable)"
    )
    add.add_argument(
        "--secret",
        action="append",
        default=[],
        metavar="FIELD=SOURCE",
        help="a secret, read from env:VARIABLE, file:PATH or - (standard input); never typed "
        "on the command line, where other users and the shell history could see it",
    )
    add.add_argument(
        "--secret-ref",
        action="append",
        default=[],
        metavar="FIELD=env:VARIABLE|FIELD=file:PATH",
        help="keep only where a secret is: the engine reads that variable or file each time it "
        "needs the secret (a server with no credential store); repeatable",
    )
    add.add_argument(
        "--check-every", type=int, metavar="SECONDS", help="seconds between health checks"
    )
    add.add_argument("--json", action="store_true", help="print one JSON document")
    listing = connection_commands.add_parser("list", parents=[common], help="list connections")
    listing.add_argument("--json", action="store_true", help="print one JSON document")
    for action, helptext in (
        ("test", "call the provider as a health check does"),
        ("remove", "remove a connection and its secrets"),
    ):
        one = connection_commands.add_parser(action, parents=[common], help=helptext)
        one.add_argument("id", type=int, help="the connection's number (see `connection list`)")
        one.add_argument("--json", action="store_true", help="print one JSON document")
    rotate = connection_commands.add_parser(
        "rotate-secret",
        parents=[common],
        help="put the provider's new webhook signing secret in place; the old one keeps "
        "working for the rotation overlap (setting security.rotation_overlap_hours)",
    )
    rotate.add_argument("id", type=int, help="the connection's number (see `connection list`)")
    rotate.add_argument(
        "--secret",
        required=True,
        metavar="SOURCE",
        help="the new signing secret, from env:VARIABLE, file:PATH or - (standard input)",
    )
    rotate.add_argument("--json", action="store_true", help="print one JSON document")

    hook_url = commands.add_parser(
        "webhook-url", parents=[common], help="the address to give a provider for its callbacks"
    )
    hook_url.add_argument("id", type=int, help="the connection's number (see `connection list`)")
    hook_url.add_argument("--json", action="store_true", help="print one JSON document")

    events = commands.add_parser("events", parents=[common], help="callbacks providers sent")
    event_commands = events.add_subparsers(dest="events_command", required=True)
    event_list = event_commands.add_parser("list", parents=[common], help="the latest events")
    event_list.add_argument("--connection", type=int, metavar="ID", help="one connection's")
    event_list.add_argument("--status", choices=inbox.STATUSES, help="only events in this state")
    event_list.add_argument("--limit", type=int, default=50, help="how many (default 50)")
    event_list.add_argument("--json", action="store_true", help="print one JSON document")
    event_show = event_commands.add_parser("show", parents=[common], help="one event in full")
    event_show.add_argument("id", type=int, help="the event's number (see `events list`)")
    event_show.add_argument("--json", action="store_true", help="print one JSON document")
    event_replay = event_commands.add_parser(
        "replay", parents=[common], help="process events again (a running app picks them up)"
    )
    event_replay.add_argument("ids", type=int, nargs="+", metavar="ID", help="event numbers")
    event_replay.add_argument("--json", action="store_true", help="print one JSON document")

    from app import cli_payments

    cli_payments.add_parsers(commands, common)

    from app import cli_api_keys, cli_audit, cli_reconcile, cli_send, cli_sync

    cli_reconcile.add_parser(commands, common)
    cli_sync.add_parser(commands, common)
    cli_send.add_parser(commands, common)
    cli_api_keys.add_parser(commands, common)
    cli_audit.add_parser(commands, common)

    from app import cli_users

    cli_users.add_parser(commands, common)

    from app import cli_backup

    cli_backup.add_parser(commands, common)

    from app import cli_database

    cli_database.add_parser(commands, common)

    bench = commands.add_parser(
        "bench", parents=[common], help="measure Switchboard on this computer"
    )
    bench.add_argument(
        "name",
        choices=["ui-stall", "webhooks", "routing", "reconcile", "calendar-sync", "messaging"],
        help="which benchmark",
    )
    bench.add_argument(
        "--seconds", type=float, help="how long to measure (ui-stall 20, webhooks 10 per phase)"
    )
    bench.add_argument(
        "--connections",
        type=int,
        help="ui-stall: sandbox connections (50); webhooks: sender connections (64)",
    )
    bench.add_argument(
        "--rate",
        type=float,
        help="ui-stall: provider calls a second (200); webhooks: the steady phase's events a "
        "second (500)",
    )
    bench.add_argument(
        "--scenario",
        default="drifting",
        help="routing: a scenario file, or the name of a shipped one (drifting, outages)",
    )
    bench.add_argument(
        "--rows",
        type=int,
        default=1_000_000,
        help="reconcile: ledger records to generate, with their counterparts (1 000 000)",
    )
    bench.add_argument(
        "--events",
        type=int,
        default=2_000,
        help="calendar-sync: the teacher's lessons to sync (2 000)",
    )
    bench.add_argument(
        "--recipients",
        type=int,
        default=5_000,
        help="messaging: guardians to send an SMS to (5 000)",
    )
    bench.add_argument(
        "--limit",
        type=float,
        default=100.0,
        help="messaging: messages a second the simulated Twilio account allows (100)",
    )
    bench.add_argument(
        "--webhooks",
        type=float,
        default=0.0,
        metavar="RATE",
        help="ui-stall: also post this many signed webhooks a second to the receiver",
    )
    bench.add_argument("--json", action="store_true", help="print one JSON document")

    health = commands.add_parser(
        "health", parents=[common], help="check every connection now and show its figures"
    )
    health.add_argument("--json", action="store_true", help="print one JSON document")

    shots = commands.add_parser(
        "screenshots", parents=[common], help="render every page to PNG files, offscreen"
    )
    shots.add_argument("--out", required=True, metavar="DIR", help="folder for the PNG files")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    command = args.command or "gui"
    try:
        config = resolve_config(args.data_dir, args.db_url)
        handler = COMMANDS[command]
        return handler(args, config)
    except (SwitchboardError, ConfigError) as exc:
        return _failed(args, str(exc))
    except OSError as exc:
        return _failed(args, _file_problem(exc))
    except KeyboardInterrupt:
        print("switchboard: interrupted", file=sys.stderr)
        return 130


def _failed(args: argparse.Namespace, message: str) -> int:
    """One sentence on stderr; with --json, the one JSON document says so too."""
    print(f"switchboard: {message}", file=sys.stderr)
    if getattr(args, "json", False):
        _print_json({"ok": False, "error": message})
    return EXIT_FAILED


def _file_problem(error: OSError) -> str:
    where = f" {error.filename}" if error.filename else ""
    return (
        f"Cannot use{where}: {error.strerror or error}. Check that the folder exists and that "
        "you may write there."
    )


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port: use 1 to 65535, or 0 for any")
    return port


def _print_json(document: Any) -> None:
    print(json.dumps(document, indent=2, default=str))


# --- commands ------------------------------------------------------------------------------------


def _gui(args: argparse.Namespace, config: Config) -> int:
    from app.ui.application import run_gui

    return int(run_gui(config, demo=getattr(args, "demo", False)))


def _doctor(args: argparse.Namespace, config: Config) -> int:
    from app.services.doctor import diagnose

    report = diagnose(config)
    if args.json:
        _print_json(report.as_json())
    else:
        print(report.to_text())
    return EXIT_OK if report.ok else EXIT_FAILED


def _serve(args: argparse.Namespace, config: Config) -> int:
    from app.engine import Engine, EngineError
    from app.logs import set_level, setup_logging

    setup_logging(config.paths.log_dir, stream=sys.stderr)
    engine = Engine(config, listen=(args.host, args.port))
    stop = threading.Event()

    def request_stop(_signum: int, _frame: object) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            engine.start()
        except EngineError as exc:
            raise CommandFailed(str(exc)) from exc
        set_level(engine.services.settings.get("diagnostics.log_level"))
        address = engine.address
        assert address is not None
        print(f"listening on {address.url}", flush=True)
        if address.host not in ("127.0.0.1", "::1", "localhost"):
            print(
                f"switchboard: warning: {address.host} is reachable from other computers on "
                "the network; use 127.0.0.1 and a tunnel unless you mean it.",
                file=sys.stderr,
                flush=True,
            )
        while not stop.wait(0.5):
            pass
    finally:
        engine.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print("stopped", file=sys.stderr, flush=True)
    return EXIT_OK


def _demo(args: argparse.Namespace, config: Config) -> int:
    from app.services import Services
    from app.services.demo import seed_demo

    async def run() -> Any:
        services = await Services.open(config)
        try:
            return await seed_demo(services)
        finally:
            await services.close()

    summary = asyncio.run(run())
    if args.json:
        _print_json({"seeded": True, "database": config.db_url, **summary.__dict__})
    else:
        print(
            f"Demo school ready in {config.paths.data_dir}: {summary.students} students, "
            f"{summary.guardians} guardians, {summary.teachers} teachers, {summary.lessons} "
            f"lessons, {summary.invoices} invoices."
        )
    return EXIT_OK


def _health(args: argparse.Namespace, config: Config) -> int:
    from datetime import UTC, datetime, timedelta

    async def run(services: Any) -> int:
        checks = {check.connection_id: check for check in await services.health.check_all()}
        await services.requests.flush()
        overview = await services.health.overview(datetime.now(UTC) - timedelta(days=1))
        rows = [_health_row(item, checks.get(item.record.id)) for item in overview]
        if args.json:
            _print_json({"connections": rows})
        elif not rows:
            print("No connections yet; add one with `switchboard connection add KIND`.")
        for row in [] if args.json else rows:
            figures = row["last_24h"] or {}
            rate = figures.get("success_rate")
            success = "—" if rate is None else f"{rate * 100:.1f}%"
            detail = row["check"]["detail"] if row["check"] else "paused, not checked"
            print(
                f"{row['id']:>4}  {row['name']}: {row['status']}; {detail} "
                f"(24 h: {figures.get('calls', 0)} calls, {success} succeeded)"
            )
        return EXIT_FAILED if any(row["status"] == "down" for row in rows) else EXIT_OK

    return _with_services(config, run)


def _health_row(item: Any, check: Any) -> dict[str, Any]:
    summary = item.summary
    return {
        "id": item.record.id,
        "name": item.record.name,
        "kind": item.record.kind,
        "status": item.status.value,
        "check": _health_json(check) if check else None,
        "last_24h": None
        if summary is None
        else {
            "calls": summary.requests,
            "failures": summary.failures,
            "success_rate": summary.success_rate,
            "avg_ms": summary.avg_ms,
            "p50_ms": summary.p50_ms,
            "p95_ms": summary.p95_ms,
            "uptime": summary.uptime,
        },
    }


def _bench(args: argparse.Namespace, config: Config) -> int:
    if args.name == "webhooks":
        return _bench_webhooks(args, config)
    if args.name == "routing":
        return _bench_routing(args)
    if args.name == "reconcile":
        return _bench_reconcile(args)
    if args.name == "calendar-sync":
        return _bench_calendar_sync(args)
    if args.name == "messaging":
        return _bench_messaging(args)
    from app.ui.bench import ui_stall

    figures = ui_stall(
        seconds=args.seconds or 20.0,
        connections=args.connections or 50,
        rate=args.rate or 200.0,
        webhooks=args.webhooks,
    )
    if args.json:
        _print_json(figures)
    else:
        dashboard, reference = figures["dashboard"], figures["reference"]
        print(
            f"GUI heartbeat lateness with the dashboard: p99 {dashboard['p99_ms']} ms, worst "
            f"{dashboard['worst_ms']} ms ({figures['calls_per_second']} calls/s recorded); "
            f"redrawing every point instead: p99 {reference['p99_ms']} ms, worst "
            f"{reference['worst_ms']} ms."
        )
    return EXIT_OK


def _bench_routing(args: argparse.Namespace) -> int:
    from app.benchmarks.routing import routing, shipped

    given = Path(args.scenario)
    path = given if given.suffix or given.exists() else shipped(args.scenario)
    figures = routing(path)
    if args.json:
        _print_json(figures)
    else:
        ours = figures["strategies"]["router"]
        versus = figures["router_vs"]
        print(
            f"Router on {figures['parameters']['scenario']}: {ours['success_rate_percent']} % "
            f"succeeded ({versus['static_priority_points']:+} points against static priority, "
            f"{versus['oracle_points']:+} against the hindsight oracle), fees "
            f"{versus['cheapest_first_fees_ratio']}x cheapest-first's, decisions in p99 "
            f"{ours['decision_p99_us']} µs."
        )
    return EXIT_OK


def _bench_reconcile(args: argparse.Namespace) -> int:
    from app.benchmarks.reconcile import reconcile_bench

    if args.rows < 1_000:
        raise SwitchboardError("Give --rows of at least 1000.")
    figures = reconcile_bench(args.rows)
    if args.json:
        _print_json(figures)
    else:
        ours = figures["engine"]
        print(
            f"Reconciled {ours['records']} records ({ours['rows']} payments) in "
            f"{ours['seconds']} s, {ours['records_per_second']} records/s, "
            f"{ours['floor_ratio']}x a plain polars join; precision {ours['precision']}, "
            f"recall {ours['recall']}, {ours['statuses_wrong']} statuses wrong; "
            f"{figures['growth_ratio']}x the time of a tenth of the rows; peak memory "
            f"{figures['peak_memory_mb']} MB."
        )
    return EXIT_OK


def _bench_messaging(args: argparse.Namespace) -> int:
    from app.benchmarks.messaging import messaging_bench

    if not 10 <= args.recipients <= 1_000_000 or not 1 <= args.limit <= 10_000:
        raise SwitchboardError("Give --recipients from 10 to 1000000 and --limit from 1 to 10000.")
    figures = messaging_bench(args.recipients, args.limit)
    if args.json:
        _print_json(figures)
    else:
        ours = figures["switchboard"]
        print(
            f"{args.recipients} SMS at a limit of {args.limit:g}/s: "
            f"{ours['messages_per_second']}/s ({figures['share_of_limit']:.1%} of the limit), "
            f"exactly once: {figures['exactly_once']}; prepared in {ours['prepare_seconds']} s."
        )
    return EXIT_OK


def _bench_calendar_sync(args: argparse.Namespace) -> int:
    from app.benchmarks.calendar_sync import calendar_sync_bench

    if not 10 <= args.events <= 100_000:
        raise SwitchboardError("Give --events between 10 and 100000.")
    figures = calendar_sync_bench(args.events)
    if args.json:
        _print_json(figures)
    else:
        ours, theirs = figures["switchboard"], figures["vdirsyncer"]
        print(
            f"{args.events} lessons into a fresh CalDAV calendar: Switchboard "
            f"{ours['initial_seconds']} s, vdirsyncer {theirs['initial_seconds']} s "
            f"({figures['initial_ratio']}x). One change after: Switchboard "
            f"{ours['incremental_seconds']} s in {ours['incremental_requests']} requests, "
            f"vdirsyncer {theirs['incremental_seconds']} s in {theirs['incremental_requests']} "
            f"({figures['incremental_ratio']}x)."
        )
    return EXIT_OK


def _bench_webhooks(args: argparse.Namespace, config: Config) -> int:
    from app.benchmarks.webhooks import webhooks

    config.paths.create()
    figures = webhooks(
        folder=config.paths.data_dir,
        seconds=args.seconds or 10.0,
        connections=args.connections or 64,
        steady_rate=args.rate or 500.0,
    )
    if args.json:
        _print_json(figures)
    else:
        ours, reference = figures["receiver"], figures["reference"]
        print(
            f"Receiver: {ours['throughput']['events_per_second']} verified, durable events/s "
            f"(reference {reference['throughput']['events_per_second']}/s, "
            f"{figures['throughput_ratio']}x); at {figures['parameters']['steady_rate']:g}/s "
            f"acknowledged in p50 {ours['steady']['p50_ms']} ms, p99 {ours['steady']['p99_ms']} "
            f"ms; {ours['lost']} of {ours['acknowledged']} acknowledged events lost."
        )
    return EXIT_OK


def _screenshots(args: argparse.Namespace, config: Config) -> int:
    from app.ui.screenshots import render_all

    written = render_all(config, Path(args.out))
    for path in written:
        print(path)
    return EXIT_OK


def _provider(args: argparse.Namespace, config: Config) -> int:
    from app.providers import KINDS

    specs = sorted(KINDS.values(), key=lambda spec: (spec.category.value, spec.name))
    if args.json:
        _print_json([_kind_json(spec) for spec in specs])
        return EXIT_OK
    for spec in specs:
        print(f"{spec.key}  ({spec.category.value}) {spec.name}")
        for field in spec.fields:
            need = "required" if field.required and field.default is None else "optional"
            print(f"    {field.name:<16} {field.kind.value:<7} {need:<9} {field.label}")
    return EXIT_OK


def _kind_json(spec: Any) -> dict[str, Any]:
    return {
        "key": spec.key,
        "name": spec.name,
        "category": spec.category.value,
        "description": spec.description,
        "auth": spec.auth.value,
        "capabilities": sorted(spec.capabilities),
        "sandbox": spec.sandbox,
        "fields": [
            {
                "name": field.name,
                "label": field.label,
                "kind": field.kind.value,
                "required": field.required and field.default is None,
                "default": field.default,
                "help": field.help,
                "choices": list(field.choices),
            }
            for field in spec.fields
        ],
    }


def _pairs(items: Sequence[str], what: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in items:
        name, equals, value = item.partition("=")
        if not equals or not name.strip():
            raise CommandFailed(f"{what} {item!r} must be written as FIELD=VALUE.")
        pairs[name.strip()] = value
    return pairs


def _secret_value(field: str, source: str) -> str:
    """A secret from where the operator said: env:NAME, file:PATH or - (standard input)."""
    if source == "-":
        value = sys.stdin.readline().rstrip("\r\n")
    elif source.startswith("env:"):
        variable = source[4:]
        if variable not in os.environ:
            raise CommandFailed(f"The environment variable {variable} for {field} is not set.")
        value = os.environ[variable]
    elif source.startswith("file:"):
        path = Path(source[5:]).expanduser()
        try:
            value = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise CommandFailed(
                f"The file {path} for {field} cannot be read: {exc.strerror}."
            ) from exc
    else:
        raise CommandFailed(
            f"Give the secret {field} as env:VARIABLE, file:PATH or - (standard input), so it "
            "never appears on the command line."
        )
    if not value:
        raise CommandFailed(f"The secret {field} is empty.")
    return value


def _connection_json(record: Any) -> dict[str, Any]:
    return {
        "id": record.id,
        "kind": record.kind,
        "name": record.name,
        "config": dict(record.config),
        "secrets": list(record.secret_fields),
        "secret_refs": dict(record.secret_refs),
        "paused": record.paused,
        "check_every": record.health_interval or record.spec.health_interval,
        "breakers": {
            endpoint or "*": {"state": snapshot.state.value, "reason": snapshot.reason}
            for endpoint, snapshot in record.breakers.items()
        },
        "created_at": record.created_at.isoformat(),
    }


def _health_json(result: Any) -> dict[str, Any]:
    return {
        "ok": result.ok,
        "latency_ms": round(result.latency_ms, 1),
        "detail": result.detail,
        "error_class": result.error_class,
    }


def _connection(args: argparse.Namespace, config: Config) -> int:
    from app.domain.errors import ValidationFailed
    from app.services import Services

    action = args.connection_command

    async def run(services: Services) -> int:
        connections = services.connections
        if action == "add":
            values = _pairs(args.set, "The setting")
            secrets = {
                field: _secret_value(field, source)
                for field, source in _pairs(args.secret, "The secret").items()
            }
            try:
                record = await connections.add(
                    args.kind,
                    args.name,
                    values,
                    secrets,
                    args.check_every,
                    references=_pairs(args.secret_ref, "The secret reference"),
                )
            except ValidationFailed as exc:
                raise CommandFailed(
                    "; ".join(f"{error.field}: {error.message}" for error in exc.errors)
                ) from exc
            if args.json:
                _print_json(_connection_json(record))
            else:
                print(f"Connection {record.id} added: {record.name} ({record.kind}).")
            return EXIT_OK
        if action == "list":
            records = await connections.connections()
            if args.json:
                _print_json([_connection_json(record) for record in records])
            elif not records:
                print("No connections yet; add one with `switchboard connection add KIND`.")
            for record in [] if args.json else records:
                state = "paused" if record.paused else "active"
                breaker = record.breakers.get("")
                if breaker is not None and breaker.state.value != "closed":
                    state += f", breaker {breaker.state.value}"
                print(f"{record.id:>4}  {record.name}  ({record.kind}, {state})")
            return EXIT_OK
        if action == "rotate-secret":
            signing = await connections.rotate_webhook_secret(
                args.id, _secret_value("signing_secret", args.secret)
            )
            until = signing.old_until.isoformat() if signing.old_until else None
            if args.json:
                _print_json({"id": args.id, "rotated": True, "old_accepted_until": until})
            elif until:
                print(f"New signing secret in place; the old one is accepted until {until}.")
            else:
                print("New signing secret in place; the old one is no longer accepted.")
            return EXIT_OK
        if action == "test":
            result = await connections.test(args.id)
            if args.json:
                _print_json({"id": args.id, **_health_json(result)})
            else:
                print(("ok: " if result.ok else "failed: ") + result.detail)
            return EXIT_OK if result.ok else EXIT_FAILED
        await connections.remove(args.id)
        if args.json:
            _print_json({"id": args.id, "removed": True})
        else:
            print(f"Connection {args.id} and its secrets removed.")
        return EXIT_OK

    return _with_services(config, run)


def _webhook_url(args: argparse.Namespace, config: Config) -> int:
    from app.services import Services
    from app.services.receiver import Address

    async def run(services: Services) -> int:
        settings = services.settings
        public = settings.get("receiver.public_url")
        local = Address(
            settings.get("receiver.host"),
            settings.get("receiver.port"),
            secure=bool(settings.get("receiver.tls_certificate")),
        ).url
        url = await services.intake.url(args.id, public or local)
        if args.json:
            _print_json({"id": args.id, "url": url, "public": bool(public)})
        else:
            print(url)
        return EXIT_OK

    return _with_services(config, run)


def _events(args: argparse.Namespace, config: Config) -> int:
    from app.services import Services

    async def run(services: Services) -> int:
        if args.events_command == "list":
            if args.limit < 1:
                raise CommandFailed("--limit must be at least 1.")
            found = await services.inbox.recent(args.connection, args.status, args.limit)
            if args.json:
                _print_json([_event_json(event, full=False) for event in found])
            elif not found:
                print("No events yet: providers send them to the address `webhook-url` gives.")
            for event in [] if args.json else found:
                at = event.received_at.astimezone().strftime("%Y-%m-%d %H:%M:%S")
                kind = event.event_type or "(no type)"
                source = f"connection {event.connection_id}"
                print(f"{event.id:>6}  {at}  {event.status:<9}  {source}  {kind}")
            return EXIT_OK
        if args.events_command == "replay":
            replayed = await services.inbox_worker.replay(args.ids)
            missing = len(set(args.ids)) - replayed
            if args.json:
                _print_json({"replayed": replayed, "not_found": missing})
            else:
                print(
                    f"{replayed} event(s) will be processed again by the running app or server."
                    + (f" {missing} number(s) matched no event." if missing else "")
                )
            return EXIT_OK if replayed else EXIT_FAILED
        one = await services.inbox.event(args.id)
        if one is None:
            raise CommandFailed(f"There is no event number {args.id}.")
        if args.json:
            _print_json(_event_json(one, full=True))
        else:
            shown = _event_json(one, full=True)
            body = shown.pop("body")
            headers = shown.pop("headers")
            for key, value in shown.items():
                print(f"{key:<18}{value}")
            print("headers")
            for name, value in sorted(headers.items()):
                print(f"  {name}: {value}")
            print("body")
            print(
                json.dumps(body, indent=2, ensure_ascii=False)
                if not isinstance(body, str)
                else body
            )
        return EXIT_OK

    return _with_services(config, run)


def _event_json(event: Any, *, full: bool) -> dict[str, Any]:
    shown: dict[str, Any] = {
        "id": event.id,
        "connection_id": event.connection_id,
        "provider_event_id": event.provider_event_id,
        "type": event.event_type,
        "received_at": event.received_at.isoformat(),
        "status": event.status,
        "attempts": event.attempts,
        "last_error": event.last_error,
        "processed_at": event.processed_at.isoformat() if event.processed_at else None,
    }
    if full:
        shown["headers"] = event.headers
        try:
            shown["body"] = json.loads(event.body)
        except (ValueError, RecursionError):
            shown["body"] = event.body.decode("utf-8", errors="replace")
    return shown


def _with_services(config: Config, work: Callable[[Any], Any]) -> int:
    from app.services import Services

    async def main() -> int:
        services = await Services.open(config)
        try:
            return int(await work(services))
        finally:
            await services.close()

    return asyncio.run(main())


COMMANDS: dict[str, Callable[[argparse.Namespace, Config], int]] = {
    "gui": _gui,
    "doctor": _doctor,
    "serve": _serve,
    "demo": _demo,
    "screenshots": _screenshots,
    "provider": _provider,
    "connection": _connection,
    "bench": _bench,
    "health": _health,
    "webhook-url": _webhook_url,
    "events": _events,
    "charge": lambda args, config: _payments_command("charge", args, config),
    "payments": lambda args, config: _payments_command("payments", args, config),
    "refund": lambda args, config: _payments_command("refund", args, config),
    "billing-run": lambda args, config: _payments_command("billing_run", args, config),
    "reconcile": lambda args, config: _reconcile_command(args, config),
    "sync": lambda args, config: _sync_command(args, config),
    "send": lambda args, config: _send_command(args, config),
    "api-key": lambda args, config: _api_key_command(args, config),
    "audit": lambda args, config: _audit_command(args, config),
    "user": lambda args, config: _users_command("user", args, config),
    "approvals": lambda args, config: _users_command("approvals", args, config),
    "backup": lambda args, config: _backup_command("backup", args, config),
    "settings": lambda args, config: _backup_command("settings", args, config),
    "database": lambda args, config: _database_command(args, config),
}


def _database_command(args: argparse.Namespace, config: Config) -> int:
    from app import cli_database

    return cli_database.database(args, config)


def _backup_command(name: str, args: argparse.Namespace, config: Config) -> int:
    from app import cli_backup

    handler: Callable[[argparse.Namespace, Config], int] = getattr(cli_backup, name)
    return handler(args, config)


def _users_command(name: str, args: argparse.Namespace, config: Config) -> int:
    from app import cli_users

    handler: Callable[[argparse.Namespace, Config], int] = getattr(cli_users, name)
    return handler(args, config)


def _audit_command(args: argparse.Namespace, config: Config) -> int:
    from app import cli_audit

    return cli_audit.audit(args, config)


def _api_key_command(args: argparse.Namespace, config: Config) -> int:
    from app import cli_api_keys

    return cli_api_keys.api_key(args, config)


def _send_command(args: argparse.Namespace, config: Config) -> int:
    from app import cli_send

    return cli_send.send(args, config)


def _sync_command(args: argparse.Namespace, config: Config) -> int:
    from app import cli_sync

    return cli_sync.sync(args, config)


def _reconcile_command(args: argparse.Namespace, config: Config) -> int:
    from app import cli_reconcile

    return cli_reconcile.reconcile(args, config)


def _payments_command(name: str, args: argparse.Namespace, config: Config) -> int:
    from app import cli_payments

    handler: Callable[[argparse.Namespace, Config], int] = getattr(cli_payments, name)
    return handler(args, config)
