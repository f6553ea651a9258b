"""Data channels end to end on loopback TCP (trial test cases, real reactor).

An FD streams 256 MiB to an SD in 64 KiB messages over cleartext and over
TLS-PSK (``R_JOB`` identity, session key), the same through a passive
connection (the SD connects, the FD still commands), a replication between
two SDs, a restore's records back to the FD, and backpressure: while the SD's
sink is paused, the FD's buffered bytes stay under a stated bound.  The SD
checks every byte with a SHA-1 over the stream; chunks carry their sequence
number, so a lost, doubled or reordered chunk changes the digest.
"""

from __future__ import annotations

import hashlib
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from bareosproto.connection import Credentials, Daemon
from bareosproto.datachannel import DataState, ReadParams, RecordHeader, SessionKind
from bareosproto.keys import Secret, session_key
from bareosproto.tls_policy import TlsPolicy
from bareosproto.twisted.datachannel import (
    SEND_BUFFER,
    DataAnswerer,
    DataCommander,
    DataSink,
    connect_fd_to_sd,
    connect_sd_to_fd,
    connect_sd_to_sd,
    data_server_factory,
)

R: Any = reactor
MiB = 1 << 20
CHUNK = 64 * 1024
KEY = session_key(bytes(range(16)))  # AABB-CCDD-...
JOB = "backup-client.2026-11-30_10.00.00_01"
COPY_JOB = "copy-job.2026-11-30_10.00.00_02"
BASE = bytes(range(256)) * (CHUNK // 256)


def chunk(i: int) -> bytes:
    return i.to_bytes(8, "big") + BASE[8:]


def expected_digest(count: int) -> bytes:
    h = hashlib.sha1()
    for i in range(count):
        h.update(chunk(i))
    return h.digest()


class HashingSink(DataSink):
    """Hashes every data byte; remembers the stream headers and records, and the types write() got.
    ``views=True`` opts in to memoryviews (it keeps nothing of them beyond the call)."""

    def __init__(self, views: bool = False) -> None:
        self.accepts_views = views
        self.kinds: set[type] = set()
        self.hash = hashlib.sha1()
        self.bytes = 0
        self.headers: list[tuple[int, int]] = []
        self.records: list[RecordHeader] = []
        self.streams_ended = 0
        self.paused_at: int | None = None
        self.pause_after: int | None = None

    def write(self, data: bytes) -> None:
        self.kinds.add(type(data))
        self.hash.update(data)
        self.bytes += len(data)
        if self.pause_after is not None and self.bytes >= self.pause_after and self.paused_at is None:
            assert self.producer is not None
            self.paused_at = self.bytes
            self.producer.pauseProducing()

    def stream_header(self, file_index: int, stream: int) -> None:
        self.headers.append((file_index, stream))

    def stream_end(self) -> None:
        self.streams_ended += 1

    def record_header(self, header: RecordHeader) -> None:
        self.records.append(header)


def buffered(transport: Any) -> int:
    """Bytes a Twisted TCP transport holds for sending (user space)."""
    return len(transport.dataBuffer) - transport.offset + transport._tempDataLen


@implementer(IPushProducer)
class ChunkProducer:
    """Writes ``count`` numbered 64 KiB chunks into a DataCommander as the transport allows."""

    def __init__(self, commander: DataCommander, count: int) -> None:
        self.commander = commander
        self.count = count
        self.sent = 0
        self.paused = False
        self.pauses = 0
        self.max_buffered = 0
        self.done: Deferred[None] = Deferred()

    def start(self) -> None:
        self.commander.registerProducer(self, True)
        self.resumeProducing()

    def pauseProducing(self) -> None:
        self.paused = True
        self.pauses += 1

    def resumeProducing(self) -> None:
        self.paused = False
        commander = self.commander
        transport = commander.protocol.transport
        while not self.paused and self.sent < self.count:
            commander.write(chunk(self.sent))
            self.sent += 1
            # what the FD holds to send: in the transport, and written but not yet handed to it
            self.max_buffered = max(self.max_buffered, buffered(transport) + commander.pending_bytes)
        if self.sent == self.count and not self.done.called:
            self.commander.unregisterProducer()
            self.done.callback(None)

    def stopProducing(self) -> None:
        self.paused = True


async def backup(commander: DataCommander, count: int) -> ChunkProducer:
    """The FD side of a backup: attributes stream, one big data stream, the session's end."""
    ticket = await commander.append_open()
    assert ticket == commander.ticket
    await commander.append_data()
    commander.send_header(1, 1)
    commander.write(b"1 3 /srv/file\0attributes")
    commander.end_stream()
    commander.send_header(1, 2)
    producer = ChunkProducer(commander, count)
    producer.start()
    await producer.done
    commander.end_stream()
    await commander.end_data()
    await commander.append_end()
    status = await commander.append_close()
    assert status == 84
    commander.finish()
    return producer


class Loopback(TestCase):
    timeout = 240

    def listen(self, factory: Any) -> int:
        port = R.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.addCleanup(self.abort_all, factory)
        return int(port.getHost().port)

    @staticmethod
    def abort_all(factory: Any) -> Deferred[Any]:
        from twisted.internet.defer import DeferredList

        closes = []
        for proto in list(factory.protocols):
            proto.abort()
            closes.append(proto.when_closed())
        return DeferredList(closes)

    def endpoint(self, port: int) -> str:
        return f"tcp:host=127.0.0.1:port={port}"

    # -- FD -> SD ----------------------------------------------------------------

    async def fd_to_sd(self, tls: bool, count: int, views: bool) -> None:
        sink = HashingSink(views)
        sessions: list[DataAnswerer] = []

        def on_session(session: DataCommander | DataAnswerer) -> None:
            assert isinstance(session, DataAnswerer)
            session.ticket = 7
            session.sink = sink
            sessions.append(session)

        policy = TlsPolicy.REQUIRED if tls else TlsPolicy.NONE
        port = self.listen(data_server_factory(R, daemon=Daemon.SD, name="bareos-sd",
                                               jobs={JOB: Credentials(KEY, policy)},
                                               on_session=on_session, tls=tls))
        commander = await connect_fd_to_sd(R, self.endpoint(port), client="client-fd", job=JOB, key=KEY,
                                           tls=tls)
        producer = await backup(commander, count)
        (answerer,) = sessions
        await answerer.when_done()
        await answerer.when_closed()
        self.assertEqual(sink.headers, [(1, 1), (1, 2)])
        self.assertEqual(sink.streams_ended, 2)
        h = hashlib.sha1(b"1 3 /srv/file\0attributes")
        for i in range(count):
            h.update(chunk(i))
        self.assertEqual(sink.hash.hexdigest(), h.hexdigest())
        self.assertEqual(sink.bytes, count * CHUNK + 24)
        self.assertEqual(sink.kinds, {memoryview} if views else {bytes})
        self.assertEqual(commander.session.state, DataState.TERMINATED)
        self.assertEqual(answerer.session.state, DataState.TERMINATED)
        self.assertGreater(producer.pauses, 0)  # the transport paced the producer
        tls_info = answerer.protocol.tls
        if tls:
            assert tls_info is not None
            self.assertEqual(tls_info.version, "TLSv1.3")
            self.assertEqual(tls_info.psk_identity, "R_JOB\x1e" + JOB)
        else:
            self.assertIsNone(tls_info)

    def test_fd_streams_256_mib_to_sd_in_clear(self) -> Deferred[None]:
        """Active client, cleartext: 256 MiB of 64 KiB messages arrive at the SD byte for byte
        (SHA-1 of the stream), framed as two streams, and both sessions end TERMINATED.  The sink
        accepts views: it gets every payload as a memoryview of the receive buffer."""
        return ensureDeferred(self.fd_to_sd(False, 256 * MiB // CHUNK, views=True))

    def test_fd_streams_to_sd_in_clear_into_a_bytes_sink(self) -> Deferred[None]:
        """The same in cleartext (64 MiB) into a sink that takes the default, ``bytes``: every
        payload arrives as bytes of its own, byte for byte."""
        return ensureDeferred(self.fd_to_sd(False, 64 * MiB // CHUNK, views=False))

    def test_fd_streams_256_mib_to_sd_over_tls_psk(self) -> Deferred[None]:
        """Active client over TLS-PSK (TLS 1.3, identity ``R_JOB\\x1e<job>``, the session key):
        the same 256 MiB arrive byte for byte, as views of the buffer TLS decrypts into."""
        return ensureDeferred(self.fd_to_sd(True, 256 * MiB // CHUNK, views=True))

    def test_fd_streams_to_sd_over_tls_psk_into_a_bytes_sink(self) -> Deferred[None]:
        """Over TLS-PSK (64 MiB) into a ``bytes`` sink."""
        return ensureDeferred(self.fd_to_sd(True, 64 * MiB // CHUNK, views=False))

    # -- SD -> passive FD --------------------------------------------------------

    async def passive(self, tls: bool, count: int) -> None:
        """The FD listens; the SD connects and answers; the FD sends the commands and the data."""
        fd_side: Deferred[ChunkProducer] = Deferred()

        def on_session(session: DataCommander | DataAnswerer) -> None:
            assert isinstance(session, DataCommander)
            ensureDeferred(backup(session, count)).chainDeferred(fd_side)

        policy = TlsPolicy.REQUIRED if tls else TlsPolicy.NONE
        port = self.listen(data_server_factory(R, daemon=Daemon.FD, name="client-fd",
                                               jobs={JOB: Credentials(KEY, policy)},
                                               on_session=on_session, tls=tls))
        sink = HashingSink()
        answerer = await connect_sd_to_fd(R, self.endpoint(port), storage="bareos-sd", job=JOB, key=KEY,
                                          ticket=4, sink=sink, tls=tls)
        await fd_side
        await answerer.when_done()
        await answerer.when_closed()
        h = hashlib.sha1(b"1 3 /srv/file\0attributes")
        for i in range(count):
            h.update(chunk(i))
        self.assertEqual(sink.hash.hexdigest(), h.hexdigest())
        self.assertEqual(sink.headers, [(1, 1), (1, 2)])
        self.assertEqual(answerer.channel.handshake.hello.kind.value, "storage-start-job")
        if tls:
            assert answerer.protocol.tls is not None
            self.assertEqual(answerer.protocol.tls.psk_identity, "R_JOB\x1e" + JOB)

    def test_passive_client_streams_256_mib_to_the_connecting_sd(self) -> Deferred[None]:
        """Passive client, cleartext: the SD connects (``Hello Storage calling Start Job``), the FD
        (the acceptor) still sends ``append ...`` and the 256 MiB, and they arrive byte for byte."""
        return ensureDeferred(self.passive(False, 256 * MiB // CHUNK))

    def test_passive_client_over_tls_psk(self) -> Deferred[None]:
        """Passive client over TLS-PSK: the SD's ClientHello carries ``R_JOB\\x1e<job>``; 256 MiB
        arrive byte for byte."""
        return ensureDeferred(self.passive(True, 256 * MiB // CHUNK))

    # -- SD -> SD ----------------------------------------------------------------

    async def replicate(self, tls: bool, count: int) -> None:
        sink = HashingSink(views=True)
        sessions: list[DataAnswerer] = []

        def on_session(session: DataCommander | DataAnswerer) -> None:
            assert isinstance(session, DataAnswerer)
            self.assertIs(session.session.kind, SessionKind.SD_SD)
            session.ticket = 3
            session.sink = sink
            sessions.append(session)

        policy = TlsPolicy.REQUIRED if tls else TlsPolicy.NONE
        port = self.listen(data_server_factory(R, daemon=Daemon.SD, name="writing-sd",
                                               jobs={COPY_JOB: Credentials(KEY, policy)},
                                               on_session=on_session, tls=tls))
        reader = await connect_sd_to_sd(R, self.endpoint(port), storage="reading-sd", job=COPY_JOB, key=KEY,
                                        tls=tls)
        self.assertEqual(await reader.start_replicate(), 3)
        await reader.replicate_data()
        for file_index in (1, 2):
            reader.send_header(file_index, 1)
            reader.write(b"attributes %d" % file_index)
            reader.end_stream()
        reader.send_header(2, 2)
        producer = ChunkProducer(reader, count)
        producer.start()
        await producer.done
        reader.end_stream()
        await reader.end_data()
        await reader.end_replicate()
        reader.finish()
        (writer,) = sessions
        await writer.when_done()
        await reader.when_closed()
        h = hashlib.sha1(b"attributes 1attributes 2")
        for i in range(count):
            h.update(chunk(i))
        self.assertEqual(sink.hash.hexdigest(), h.hexdigest())
        self.assertEqual(sink.kinds, {memoryview})
        self.assertEqual(sink.headers, [(1, 1), (2, 1), (2, 2)])
        self.assertEqual(writer.session.state, DataState.TERMINATED)

    def test_replication_between_two_sds(self) -> Deferred[None]:
        """SD -> SD (``Hello Start Storage Job``): ``start replicate``, ``replicate data``, three
        streams (the last 128 MiB), ``end replicate``, TERMINATE; the writing SD gets every byte."""
        return ensureDeferred(self.replicate(False, 128 * MiB // CHUNK))

    def test_replication_over_tls_psk(self) -> Deferred[None]:
        """The same replication inside TLS-PSK (32 MiB)."""
        return ensureDeferred(self.replicate(True, 32 * MiB // CHUNK))

    # -- a restore: records SD -> FD -------------------------------------------------

    async def restore(self, count: int) -> None:
        sent: list[int] = []

        def on_read(answerer: DataAnswerer) -> None:
            answerer.start_read()

            @implementer(IPushProducer)
            class Records:
                paused = False

                def pauseProducing(self) -> None:
                    self.paused = True

                def resumeProducing(self) -> None:
                    self.paused = False
                    while not self.paused and len(sent) < count:
                        i = len(sent)
                        answerer.send_record(9, 1796030307, 1 + i // 100, 2, chunk(i))
                        sent.append(i)
                    if len(sent) == count and not self.paused:
                        answerer.unregisterProducer()
                        answerer.end_read()

                def stopProducing(self) -> None:
                    self.paused = True

            records = Records()
            answerer.registerProducer(records, True)
            records.resumeProducing()

        def on_session(session: DataCommander | DataAnswerer) -> None:
            assert isinstance(session, DataAnswerer)
            session.ticket = 9
            session.on_read = on_read

        port = self.listen(data_server_factory(R, daemon=Daemon.SD, name="bareos-sd", jobs={JOB: KEY},
                                               on_session=on_session, tls=False))
        commander = await connect_fd_to_sd(R, self.endpoint(port), client="client-fd", job=JOB, key=KEY)
        self.assertEqual(await commander.read_open(ReadParams("DummyVolume", 9, 1796030307)), 9)
        sink = HashingSink()
        await commander.read_data(sink)
        status = await commander.read_close()
        commander.finish()
        self.assertEqual(status, 82)
        self.assertEqual(sink.hash.digest(), expected_digest(count))
        self.assertEqual(len(sink.records), count)
        self.assertEqual(sink.records[-1], RecordHeader(9, 1796030307, 1 + (count - 1) // 100, 2, CHUNK))

    def test_restore_records_reach_the_fd(self) -> Deferred[None]:
        """A restore's read session over loopback: ``rechdr`` + data per record (64 MiB), the
        EOD, ``read close`` -> status 82, and the FD's two TERMINATEs; every byte arrives."""
        return ensureDeferred(self.restore(64 * MiB // CHUNK))

    # -- backpressure ------------------------------------------------------------------

    async def backpressure(self, tls: bool) -> None:
        sink = HashingSink(views=not tls)  # the bound holds for both kinds of sink
        sink.pause_after = 8 * MiB
        sessions: list[DataAnswerer] = []

        def on_session(session: DataCommander | DataAnswerer) -> None:
            assert isinstance(session, DataAnswerer)
            session.sink = sink
            sessions.append(session)

        port = self.listen(data_server_factory(R, daemon=Daemon.SD, name="bareos-sd", jobs={JOB: KEY},
                                               on_session=on_session, tls=tls))
        commander = await connect_fd_to_sd(R, self.endpoint(port), client="client-fd", job=JOB, key=KEY,
                                           tls=tls)
        count = 256 * MiB // CHUNK
        await commander.append_open()
        await commander.append_data()
        commander.send_header(1, 2)
        producer = ChunkProducer(commander, count)
        producer.start()
        # let the writer run into the paused reader: the kernel's socket buffers fill (their
        # autotuning grows them for a while), then the writer stays put
        quiet, written = 0, -1
        for _ in range(400):
            await deferLater(R, 0.05, lambda: None)
            quiet = quiet + 1 if producer.sent == written else 0
            written = producer.sent
            if sink.paused_at is not None and quiet >= 6:
                break
        self.assertIsNotNone(sink.paused_at)
        self.assertTrue(producer.paused)
        stalled_at = producer.sent
        await deferLater(R, 0.3, lambda: None)
        self.assertEqual(producer.sent, stalled_at, "the writer went on while the reader was paused")
        transport = commander.protocol.transport
        # The bound: the transport's send buffer limit plus one frame (+ TLS record overhead),
        # for what the transport holds and what the commander holds before it.
        bound = SEND_BUFFER + CHUNK + 4 + 1024
        self.assertLessEqual(producer.max_buffered, bound)
        self.assertLessEqual(buffered(transport) + commander.pending_bytes, bound)
        (answerer,) = sessions
        self.assertLessEqual(answerer.max_queued_bytes, SEND_BUFFER + CHUNK)
        self.assertLess(producer.sent * CHUNK, 64 * MiB)  # far from the 256 MiB it wants to send
        # resume: everything arrives
        answerer.resumeProducing()
        await producer.done
        commander.end_stream()
        await commander.end_data()
        await commander.append_end()
        await commander.append_close()
        commander.finish()
        await answerer.when_done()
        self.assertEqual(sink.hash.digest(), expected_digest(count))
        if tls:
            self.assertEqual(sink.kinds, {bytes})
        else:  # views, and copies of what waited in the pause (if the pause came inside a read)
            self.assertIn(memoryview, sink.kinds)
            self.assertLessEqual(sink.kinds, {memoryview, bytes})
        self.assertLessEqual(producer.max_buffered, bound)

    def test_a_paused_consumer_bounds_the_writers_buffer(self) -> Deferred[None]:
        """While the SD's sink is paused the FD's producer is paused too: the FD stops writing, its
        transport never holds more than SEND_BUFFER + one 64 KiB frame (+1 KiB), the SD queues at
        most one socket read (copies of the views the sink has not had), and after the resume all
        256 MiB arrive intact.  (This sink accepts views; the TLS variant's takes bytes.)"""
        return ensureDeferred(self.backpressure(False))

    def test_backpressure_over_tls_psk(self) -> Deferred[None]:
        """The same bound holds over TLS-PSK (the transport holds ciphertext)."""
        return ensureDeferred(self.backpressure(True))


    async def wrong_key(self) -> None:
        from bareosproto.errors import RemoteProtocolError

        port = self.listen(data_server_factory(R, daemon=Daemon.SD, name="bareos-sd", jobs={JOB: KEY},
                                               on_session=lambda s: None, tls=False))
        d = connect_fd_to_sd(R, self.endpoint(port), client="fd", job=JOB,
                             key=Secret("ZZZZ-ZZZZ-ZZZZ-ZZZZ-ZZZZ-ZZZZ-ZZZZ-ZZZZ"))
        with self.assertRaises(RemoteProtocolError):
            await d
        d = connect_fd_to_sd(R, self.endpoint(port), client="fd", job="unknown.2026-11-30_10.00.00_09", key=KEY)
        with self.assertRaises(RemoteProtocolError):
            await d

    def test_an_unknown_job_or_a_wrong_session_key_is_refused(self) -> Deferred[None]:
        """The SD admits only running jobs, authenticated with their session key."""
        return ensureDeferred(self.wrong_key())

    async def refusal(self) -> None:
        from bareosproto.connection import ClientConnection, ConnectionType
        from bareosproto.events import Message, SignalFrame
        from bareosproto.twisted.factory import connect

        port = self.listen(data_server_factory(R, daemon=Daemon.SD, name="bareos-sd", jobs={JOB: KEY},
                                               on_session=lambda s: None, tls=False))
        channel = await connect(R, self.endpoint(port), lambda: ClientConnection(
            ConnectionType.FD_SD, name="client-fd", key=KEY, job=JOB, clock=R.seconds))
        channel.send(b"append data 1\n")
        self.assertEqual(await channel.next_frame(), Message(b"3902 Error session not opened\n"))
        self.assertEqual(await channel.next_frame(), SignalFrame(-4))
        await channel.protocol.when_closed()

    def test_the_sd_refuses_a_command_out_of_order_and_closes(self) -> Deferred[None]:
        """Over the network too: ``append data`` before ``append open session`` gets ``3902 Error
        session not opened``, ``BNET_TERMINATE``, and the SD closes."""
        return ensureDeferred(self.refusal())
