"""A File Daemon behind NAT: it connects to the Director and waits there for jobs.

A Director cannot reach a client behind NAT or a firewall, so the client connects out
(``Connection From Client To Director = yes`` in Bareos) and keeps one idle, authenticated
connection in the Director's pool.  When a job takes it, this FD at once opens the next one,
and serves the job on the taken connection.  If the Director restarts, it reconnects with
exponential backoff.

    python examples/client_initiated_fd.py --director 127.0.0.1:9101 --name my-fd \\
        --password fd-password
"""

from __future__ import annotations

import argparse
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import react

from bareosproto import Message, Signal, as_key
from bareosproto.twisted import Channel, DaemonChannel
from bareosproto.twisted.client_initiated import ClientInitiatedConnector, client_initiated_connection


async def serve_job(channel: Channel) -> None:
    """The Director took our waiting connection: answer its commands (here only ``status``)."""
    job = DaemonChannel(channel)
    while job.is_open:
        frame = await job.read_command()
        if not isinstance(frame, Message):
            if frame.signal == Signal.BNET_TERMINATE:
                break
            continue
        if frame.payload.strip() == b"status":
            job.send_line("\n")
            job.send_lines(["my-fd is behind NAT and fine\n"], nul=True)
        else:
            job.send_line("2999 Invalid command\n")
            break
    job.terminate()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--director", default="127.0.0.1:9101", metavar="HOST:PORT")
    parser.add_argument("--name", default="my-fd", help="our Client name")
    parser.add_argument("--password", required=True, help="the password of our Director resource")
    parser.add_argument("--tls", action="store_true", help="TLS-PSK (Bareos' default)")
    parser.add_argument("--heartbeat", type=float, default=60.0, help="TCP keepalive interval, seconds")
    args = parser.parse_args()

    async def run(reactor: Any) -> None:
        host, _, port = args.director.rpartition(":")
        connector = ClientInitiatedConnector(
            reactor,
            f"tcp:host={host}:port={port}",
            client_initiated_connection(args.name, as_key(args.password), reactor, tls=args.tls),
            lambda channel: Deferred.fromCoroutine(serve_job(channel)),
            first_retry=1.0,
            max_retry=60.0,
            heartbeat_interval=args.heartbeat,
        )
        connector.startService()
        print(f"{args.name}: keeping a connection open to {args.director}")
        await Deferred()  # until interrupted

    react(lambda reactor: Deferred.fromCoroutine(run(reactor)))


if __name__ == "__main__":
    main()
