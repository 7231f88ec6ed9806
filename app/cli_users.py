"""`user`: the people who sign in, and the service user this command line acts as.
`approvals list`: risky actions waiting for a second person.

Commands act as the service user (its role is what they may do; `user set-role service ROLE`
changes it). A password is read from env:VARIABLE, file:PATH or - (standard input), never
from the command line, where other users of the computer could see it.
"""

from __future__ import annotations

import argparse
from typing import Any

from app.cli import EXIT_OK, CommandFailed, _print_json, _secret_value, _with_services
from app.config import Config
from app.domain.access import Role
from app.services import Services
from app.services.approvals import Status
from app.services.users import User


def _role(text: str) -> Role:
    try:
        return Role(text.strip().lower())
    except ValueError:
        roles = ", ".join(role.value for role in Role)
        raise argparse.ArgumentTypeError(f"{text!r} is not a role: use {roles}") from None


def add_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    user = commands.add_parser("user", parents=[common], help="who may sign in, and their roles")
    actions = user.add_subparsers(dest="user_command", metavar="ACTION", required=True)
    listing = actions.add_parser("list", parents=[common], help="every user and their role")
    listing.add_argument("--json", action="store_true", help="print one JSON document")
    add = actions.add_parser("add", parents=[common], help="add a person who may sign in")
    add.add_argument("name", help="the name they sign in with")
    add.add_argument("--role", type=_role, required=True, help=", ".join(r.value for r in Role))
    add.add_argument(
        "--password",
        required=True,
        metavar="SOURCE",
        help="their first password, from env:VARIABLE, file:PATH or - (standard input)",
    )
    add.add_argument("--json", action="store_true", help="print one JSON document")
    role = actions.add_parser(
        "set-role", parents=[common], help="change a role ('service' is this command line's)"
    )
    role.add_argument("name")
    role.add_argument("role", type=_role)
    role.add_argument("--json", action="store_true", help="print one JSON document")
    for name, text in (("disable", "stop someone signing in"), ("enable", "let them in again")):
        switch = actions.add_parser(name, parents=[common], help=text)
        switch.add_argument("name")
        switch.add_argument("--json", action="store_true", help="print one JSON document")
    reset = actions.add_parser(
        "reset-password",
        parents=[common],
        help="set a new password (their two-step sign-in is removed: they set it up again)",
    )
    reset.add_argument("name")
    reset.add_argument("--password", required=True, metavar="SOURCE", help="env:, file: or -")
    reset.add_argument("--json", action="store_true", help="print one JSON document")

    approvals = commands.add_parser(
        "approvals", parents=[common], help="risky actions waiting for a second person"
    )
    which = approvals.add_subparsers(dest="approvals_command", metavar="ACTION", required=True)
    waiting = which.add_parser("list", parents=[common], help="approvals, newest first")
    waiting.add_argument("--all", action="store_true", help="decided ones too")
    waiting.add_argument("--json", action="store_true", help="print one JSON document")


def _user_json(user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "name": user.name,
        "role": user.role.value,
        "service": user.service,
        "disabled": user.disabled,
        "two_step": user.two_step,
        "backup_codes_left": user.backup_codes_left,
        "last_sign_in_at": user.last_sign_in_at.isoformat() if user.last_sign_in_at else None,
    }


async def _named(services: Services, name: str) -> User:
    wanted = name.strip().casefold()
    for user in await services.users.users():
        if user.name.casefold() == wanted:
            return user
    raise CommandFailed(f"There is no user called {name}; `switchboard user list` shows them.")


def user(args: argparse.Namespace, config: Config) -> int:
    async def run(services: Services) -> int:
        users = services.users
        command = args.user_command
        if command == "list":
            everyone = await users.users()
            if args.json:
                _print_json({"users": [_user_json(u) for u in everyone]})
            for u in everyone if not args.json else ():
                state = "switched off" if u.disabled else ("two-step" if u.two_step else "")
                kind = " (service user)" if u.service else ""
                print(f"{u.name}{kind}\t{u.role.label}\t{state}".rstrip())
            return EXIT_OK
        if command == "add":
            password = _secret_value("password", args.password)
            if await users.needs_administrator() and args.role is not Role.ADMINISTRATOR:
                raise CommandFailed(
                    "The first person must be an administrator: add them with --role administrator."
                )
            if await users.needs_administrator():
                changed = await users.create_administrator(args.name, password)
            else:
                changed = await users.add(args.name, args.role, password)
        elif command == "set-role":
            changed = await users.set_role((await _named(services, args.name)).id, args.role)
        elif command in ("disable", "enable"):
            target = await _named(services, args.name)
            changed = await users.set_disabled(target.id, command == "disable")
        else:
            password = _secret_value("password", args.password)
            target = await _named(services, args.name)
            changed = await users.reset_password(target.id, password)
        if args.json:
            _print_json(_user_json(changed))
        else:
            off = ", switched off" if changed.disabled else ""
            print(f"{changed.name}: {changed.role.label}{off}.")
        return EXIT_OK

    return _with_services(config, run)


def approvals(args: argparse.Namespace, config: Config) -> int:
    async def run(services: Services) -> int:
        found = await services.approvals.approvals(None if args.all else Status.WAITING)
        if args.json:
            _print_json(
                {
                    "approvals": [
                        {
                            "id": a.id,
                            "action": a.action,
                            "summary": a.summary,
                            "requested_by": a.requested_by,
                            "requested_at": a.requested_at.isoformat(),
                            "status": a.status.value,
                            "decided_by": a.decided_by,
                            "outcome": a.outcome,
                        }
                        for a in found
                    ]
                }
            )
        elif not found:
            print("Nothing waits for approval.")
        for a in found if not args.json else ():
            print(f"{a.id}\t{a.status.value}\t{a.summary}\tasked by {a.requested_by}")
        return EXIT_OK

    return _with_services(config, run)
