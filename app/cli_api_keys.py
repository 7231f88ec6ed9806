"""`api-key`: keys other apps (Zapier) use to call the school's API on the receiver, under
/zapier. A key is shown once, when it is made; only its hash is kept."""

from __future__ import annotations

import argparse
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
    revoke = actions.add_parser("revoke", parents=[common], help="stop a key working, for good")
    revoke.add_argument("id", type=int, help="the key's number")
    revoke.add_argument("--json", action="store_true", help="print one JSON document")


def _shown(key: ApiKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "name": key.name,
        "prefix": key.prefix,
        "created_at": key.created_at.isoformat(),
        "last_used_at": key.last_used_at.isoformat() if key.last_used_at else None,
        "revoked_at": key.revoked_at.isoformat() if key.revoked_at else None,
    }


def api_key(args: argparse.Namespace, config: Config) -> int:
    async def run(services: Services) -> int:
        keys = services.api_keys
        if args.api_key_command == "create":
            key, value = await keys.create(args.name)
            if args.json:
                _print_json({**_shown(key), "key": value})
            else:
                print(f"API key {key.id} ({key.name}): {value}")
                print("Copy it now: it is not shown again. Zapier asks for it as the API key.")
        elif args.api_key_command == "list":
            found = await keys.keys()
            if args.json:
                _print_json({"keys": [_shown(key) for key in found]})
            for key in found if not args.json else []:
                state = "revoked" if key.revoked_at else "active"
                print(f"{key.id}  {key.prefix}…  {key.name}  {state}")
        else:
            key = await keys.revoke(args.id)
            if args.json:
                _print_json(_shown(key))
            else:
                print(f"API key {key.id} ({key.name}) is revoked.")
        return EXIT_OK

    return int(_with_services(config, run))
