"""`api-key`: keys other apps (Zapier) use to call the school's API on the receiver, under
/zapier. A key is shown once, when it is made or rotated; only its hash is kept."""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import Any

from app.cli import EXIT_OK, _print_json, _with_services
from app.config import Config
from app.services import Services
from app.services.api_keys import ApiKey


def add_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    keys = commands.add_parser(
        "api-key", parents=[common], help="keys for apps that call Switchboard (Zapier)"
    )
    actions = keys.add_subparsers(dest="api_key_command", metavar="ACTION", required=True)
    create = actions.add_parser("create", parents=[common], help="make a key (shown once)")
    create.add_argument("name", help="what the key is for, e.g. Zapier")
    create.add_argument("--json", action="store_true", help="print one JSON document")
    listing = actions.add_parser("list", parents=[common], help="the keys, without their values")
    listing.add_argument("--json", action="store_true", help="print one JSON document")
    rotate = actions.add_parser(
        "rotate",
        parents=[common],
        help="make a new key with the same name; the old one works until the overlap ends",
    )
    rotate.add_argument("id", type=int, help="the key's number")
    rotate.add_argument("--json", action="store_true", help="print one JSON document")
    revoke = actions.add_parser("revoke", parents=[common], help="stop a key working, for good")
    revoke.add_argument("id", type=int, help="the key's number")
    revoke.add_argument("--json", action="store_true", help="print one JSON document")


def _shown(key: ApiKey, now: datetime) -> dict[str, Any]:
    return {
        "id": key.id,
        "name": key.name,
        "prefix": key.prefix,
        "state": key.state(now),
        "created_at": key.created_at.isoformat(),
        "last_used_at": key.last_used_at.isoformat() if key.last_used_at else None,
        "revoked_at": key.revoked_at.isoformat() if key.revoked_at else None,
        "expires_at": key.expires_at.isoformat() if key.expires_at else None,
        "replaced_by": key.replaced_by,
    }


def _state_words(key: ApiKey, now: datetime) -> str:
    state = key.state(now)
    if state == "rotating" and key.expires_at is not None:
        return f"rotated, works until {key.expires_at:%Y-%m-%d %H:%M} UTC"
    return state


def api_key(args: argparse.Namespace, config: Config) -> int:
    async def run(services: Services) -> int:
        keys = services.api_keys
        now = keys.now()
        if args.api_key_command == "create":
            key, value = await keys.create(args.name)
            if args.json:
                _print_json({**_shown(key, now), "key": value})
            else:
                print(f"API key {key.id} ({key.name}): {value}")
                print("Copy it now: it is not shown again. Zapier asks for it as the API key.")
        elif args.api_key_command == "rotate":
            key, value = await keys.rotate(args.id)
            old = next(found for found in await keys.keys() if found.id == args.id)
            if args.json:
                _print_json({**_shown(key, now), "key": value, "replaces": _shown(old, now)})
            else:
                until = old.expires_at
                print(f"API key {key.id} ({key.name}) replaces key {old.id}: {value}")
                print(
                    "Copy it now: it is not shown again. The old key works until "
                    f"{until:%Y-%m-%d %H:%M} UTC, then it is refused."
                    if until is not None and until > now
                    else "Copy it now: it is not shown again. The old key is refused from now on."
                )
        elif args.api_key_command == "list":
            found = await keys.keys()
            if args.json:
                _print_json({"keys": [_shown(key, now) for key in found]})
            for key in found if not args.json else []:
                print(f"{key.id}  {key.prefix}…  {key.name}  {_state_words(key, now)}")
        else:
            key = await keys.revoke(args.id)
            if args.json:
                _print_json(_shown(key, now))
            else:
                print(f"API key {key.id} ({key.name}) is revoked.")
        return EXIT_OK

    return int(_with_services(config, run))
