"""A File Daemon of your own that answers ``status`` (and refuses the rest as Bareos does).

Run it, then point a real Director at it (a ``Client`` resource with this name, address, port
and password), or try it with the probe:

    python examples/status_fd.py --port 9102 --name my-fd --director bareos-dir:secret
    bareosproto-probe --connect 127.0.0.1:9102 --as director --name bareos-dir \\
        --password secret --command status
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import react

from bareosproto import Message, Signal, TlsPolicy
from bareosproto.twisted import DaemonChannel, fd_server_factory, server_endpoint

START = time.strftime("%d-%b-%y %H:%M")


def status_lines(name: str) -> list[str]:
    """What ``status`` prints; Bareos sends each line as one frame ending in NUL."""
    return [
        "\n",
        f"{name} Version: 26.0.0 (21 August 2026) Linux,bareosproto\n",
        f"Daemon started {START}. Jobs: run=0 running=0.\n",
        "\nRunning Jobs:\nNo Jobs running.\n====\n",
    ]


async def serve(channel: DaemonChannel, name: str) -> None:
    """One Director session: answer commands until the Director goes away."""
    while channel.is_open:
        frame = await channel.read_command()
        if not isinstance(frame, Message):
            if frame.signal == Signal.BNET_TERMINATE:
                break
            continue
        command = frame.payload.decode("utf-8", "replace").strip()
        if command in ("status", ".status header"):
            first, *rest = status_lines(name)
            channel.send_line(first)  # the first status frame carries no NUL (PROTOCOL.md 15.5)
            channel.send_lines(rest, nul=True, eod=True)
        else:
            channel.send_line(b"2999 Invalid command\n")
            break
    channel.terminate()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=9102)
    parser.add_argument("--name", default="my-fd")
    parser.add_argument("--director", action="append", default=[], metavar="NAME:PASSWORD")
    parser.add_argument("--tls", choices=["none", "required"], default="required")
    args = parser.parse_args()
    policy = TlsPolicy.REQUIRED if args.tls == "required" else TlsPolicy.NONE
    directors = {d.split(":", 1)[0]: (d.split(":", 1)[1], policy) for d in args.director or ["bareos-dir:secret"]}

    async def run(reactor: Any) -> None:
        factory = fd_server_factory(
            reactor, client_name=args.name, directors=directors, tls=args.tls != "none",
            on_channel=lambda ch: Deferred.fromCoroutine(serve(ch, args.name)).addErrback(lambda _: None),
        )
        await server_endpoint(reactor, f"tcp:{args.port}").listen(factory)
        print(f"{args.name} listening on port {args.port}")
        await Deferred()  # until interrupted

    react(lambda reactor: Deferred.fromCoroutine(run(reactor)))


if __name__ == "__main__":
    main()
