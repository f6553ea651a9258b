"""A console client: log into a Director and run commands, as bconsole does.

    python examples/console_client.py --director 127.0.0.1:9101 --name admin --password secret \\
        "status dir" "list clients"
    python examples/console_client.py --json --password director-password "list jobs"   # default console

With ``--json`` the session switches to API mode 2 and prints the decoded JSON result.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import react

from bareosproto.console import ApiMode
from bareosproto.twisted import connect_console


async def run(reactor: Any, args: argparse.Namespace) -> None:
    session = await connect_console(
        reactor, f"tcp:host={args.host}:port={args.port}", args.name, args.password, tls=not args.cleartext
    )
    print(f"connected to {session.director} {session.version}, TLS {session.tls_version or 'none'}")
    if args.json:
        await session.set_api(ApiMode.JSON)
    for command in args.commands:
        reply = await session.call(command)
        if args.json:
            print(json.dumps(reply.json, indent=2))
        else:
            print(reply.text, end="" if reply.text.endswith("\n") else "\n")
    await session.quit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--director", default="127.0.0.1:9101", metavar="HOST:PORT")
    parser.add_argument("--name", default=None, help="named console (default: the default console)")
    parser.add_argument("--password", required=True)
    parser.add_argument("--cleartext", action="store_true", help="no TLS-PSK")
    parser.add_argument("--json", action="store_true", help="API mode 2")
    parser.add_argument("commands", nargs="+")
    args = parser.parse_args()
    args.host, _, port = args.director.rpartition(":")
    args.port = int(port)
    react(lambda reactor: Deferred.fromCoroutine(run(reactor, args)))


if __name__ == "__main__":
    main()
