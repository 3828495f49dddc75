"""``coinlake config show``: the effective settings, secrets redacted."""

from __future__ import annotations

import argparse
import json
from typing import Any

from app.commands.common import settings_from_args


def register(sub: Any) -> None:
    parser = sub.add_parser("config", help="inspect the effective settings")
    inner = parser.add_subparsers(dest="config_command", metavar="ACTION")
    inner.required = True
    show = inner.add_parser("show", help="print the effective settings with secrets redacted")
    show.add_argument("--json", action="store_true", help="print a JSON object")
    show.set_defaults(handler=_show)


def _show(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    values = settings.redacted()
    if args.json:
        print(json.dumps(values, indent=2, default=str))
        return 0
    width = max(len(k) for k in values)
    for key, value in values.items():
        print(f"{key:<{width}}  {'' if value is None else value}")
    return 0
