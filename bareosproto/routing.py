"""Who opens a data channel, to which address, and which way the data flows.

Pure functions of the Director's configuration (PROTOCOL.md 10; upstream
``dird/backup.cc``, ``dird/restore.cc``, ``dird/verify.cc``,
``dird/migrate.cc``):

* **Lan Address.**  An FD is told the SD's ``LanAddress`` only if *both* the
  client and the storage have one, else the storage's ``Address``
  (``StorageAddressToContact``); an SD contacting a passive FD gets the
  client's ``LanAddress`` under the same condition (``ClientAddressToContact``);
  a reading SD gets the writing SD's ``LanAddress`` if both storages have one.
  Verify jobs ignore Lan Address.  Ports are always the normal ones.
* **Direction.**  Active client: the FD connects to the SD.  Passive client
  (``Passive = yes``): the SD connects to the FD.  Copy/migration: the
  reading SD connects to the writing SD.  The FD always *commands* the
  FD-SD session (it sends the ``append``/``read`` commands, also when it
  accepted the connection); the reading SD commands the SD-SD session.
  Data goes FD -> SD in backups, SD -> FD in restores and verifies,
  reading SD -> writing SD in copies.
* **Setup commands** the Director sends, in its order
  (:func:`director_setup`): built with :mod:`bareosproto.jobcmds`.
"""

from __future__ import annotations

import enum

import attrs

from .errors import LocalProtocolError
from .jobcmds import (
    ListenCommand,
    PassiveClientCommand,
    ReplicateCommand,
    RunCommand,
    SetAuthorizationCommand,
    StorageCommand,
)
from .keys import Secret
from .tls_policy import TlsPolicy

__all__ = [
    "JobKind",
    "Peer",
    "Site",
    "Route",
    "SetupStep",
    "storage_address_to_contact",
    "client_address_to_contact",
    "replication_address_to_contact",
    "data_route",
    "ssl_value",
    "director_setup",
]


class JobKind(enum.Enum):
    BACKUP = "backup"
    RESTORE = "restore"
    VERIFY = "verify"  #: level ``VolumeToCatalog``, the only verify with a data channel
    COPY = "copy"  #: copy and migration jobs between two SDs


class Peer(enum.Enum):
    """The daemons at the ends of a data channel."""

    FD = "fd"
    SD = "sd"
    READING_SD = "reading-sd"
    WRITING_SD = "writing-sd"


@attrs.frozen
class Site:
    """What the Director's ``Client`` or ``Storage`` resource says about a daemon.

    ``port`` is ``FdPort`` / ``SdPort``; ``lan_address`` is ``None`` unless
    ``LanAddress`` is set.  ``tls`` is "TLS is configured" for this resource
    (``TlsEnable``) and ``policy`` its ``GetPolicy()`` value, used towards
    clients without a TLS-first handshake (see :func:`ssl_value`).
    """

    address: str
    port: int
    lan_address: str | None = None
    tls: bool = False
    policy: TlsPolicy = TlsPolicy.NONE


def storage_address_to_contact(client: Site, storage: Site) -> str:
    """The SD address an active FD is told: the storage's Lan Address only if both have one."""
    if client.lan_address and storage.lan_address:
        return storage.lan_address
    return storage.address


def client_address_to_contact(client: Site, storage: Site) -> str:
    """The FD address an SD is told for a passive client: the client's Lan Address only if both have one."""
    if client.lan_address and storage.lan_address:
        return client.lan_address
    return client.address


def replication_address_to_contact(read_storage: Site, write_storage: Site) -> str:
    """The writing SD's address the reading SD is told: its Lan Address only if both storages have one."""
    if read_storage.lan_address and write_storage.lan_address:
        return write_storage.lan_address
    return write_storage.address


@attrs.frozen
class Route:
    """One data channel: who connects where, who commands, which way the data goes."""

    connector: Peer  #: opens the TCP connection (sends the Hello)
    acceptor: Peer
    address: str
    port: int
    commander: Peer  #: sends the session commands (``append ...``, ``read ...``, ``start replicate``)
    data_from: Peer
    data_to: Peer


def data_route(job: JobKind, first: Site, second: Site, *, passive: bool = False) -> Route:
    """The data channel of a job.

    ``first``/``second`` are the client and the storage (backup, restore,
    verify) or the reading and the writing storage (copy).  ``passive`` is
    the client's ``Passive`` directive; a copy has no client, so it is
    ignored there.
    """
    if job is JobKind.COPY:
        return Route(Peer.READING_SD, Peer.WRITING_SD, replication_address_to_contact(first, second),
                     second.port, Peer.READING_SD, Peer.READING_SD, Peer.WRITING_SD)
    client, storage = first, second
    lan = job is not JobKind.VERIFY  # verify.cc sends Address / Address
    if passive:
        address = client_address_to_contact(client, storage) if lan else client.address
        connector, acceptor, port = Peer.SD, Peer.FD, client.port
    else:
        address = storage_address_to_contact(client, storage) if lan else storage.address
        connector, acceptor, port = Peer.FD, Peer.SD, storage.port
    data_from, data_to = (Peer.FD, Peer.SD) if job is JobKind.BACKUP else (Peer.SD, Peer.FD)
    return Route(connector, acceptor, address, port, Peer.FD, data_from, data_to)


def ssl_value(site: Site, tls_first_client: bool = True) -> int:
    """The ``ssl=`` of a setup command (PROTOCOL.md 10.2).

    For a client whose handshake with the Director was TLS-first: 4 (TLS-PSK
    with the ``R_JOB`` identity) if the relevant resource has TLS configured,
    else 0.  For an old cleartext client: that resource's policy (0/1/2),
    which leads to a cleartext Hello and the policy step after CRAM-MD5.
    The relevant resource is the storage for ``storage address``, the client
    for ``passive client``, the writing storage for ``replicate`` (always
    4 or 0).
    """
    if tls_first_client:
        return int(TlsPolicy.AUTO if site.tls else TlsPolicy.NONE)
    return int(site.policy)


@attrs.frozen
class SetupStep:
    """One line the Director sends: ``to`` receives ``command``."""

    to: Peer
    command: StorageCommand | PassiveClientCommand | SetAuthorizationCommand | ReplicateCommand | ListenCommand | RunCommand


def director_setup(
    job: JobKind,
    first: Site,
    second: Site,
    *,
    passive: bool = False,
    key: Secret | None = None,
    tls_first_client: bool = True,
    job_id: int = 0,
    job_name: str = "",
) -> tuple[SetupStep, ...]:
    """The data-channel setup lines of a job, in the Director's order.

    ``key`` is the session key (restores and verifies send it again; copies
    send the writing job's); ``job_id``/``job_name`` identify the writing
    job of a copy.  The job commands before (``JobId=``, device
    reservation, bootstrap) and the later ``backup``/``restore`` commands
    are not part of this.
    """
    route = data_route(job, first, second, passive=passive)
    run = SetupStep(Peer.SD, RunCommand())
    if job is JobKind.COPY:
        if key is None or not job_name:
            raise LocalProtocolError("a copy needs the writing job's name and session key")
        replicate = ReplicateCommand(job_id, job_name, route.address, route.port,
                                     ssl_value(second, True), key)
        return (SetupStep(Peer.WRITING_SD, ListenCommand()), SetupStep(Peer.READING_SD, replicate),
                SetupStep(Peer.READING_SD, RunCommand()))
    client, storage = first, second
    if job is JobKind.BACKUP:
        if passive:
            return (SetupStep(Peer.SD, PassiveClientCommand(route.address, route.port,
                                                            ssl_value(client, tls_first_client))), run)
        return (SetupStep(Peer.FD, StorageCommand(route.address, route.port,
                                                  ssl_value(storage, tls_first_client))), run)
    if key is None:
        raise LocalProtocolError(f"a {job.value} job sends the session key")
    if passive:
        passive_cmd = SetupStep(Peer.SD, PassiveClientCommand(route.address, route.port,
                                                              ssl_value(client, tls_first_client)))
        if job is JobKind.RESTORE:
            return (SetupStep(Peer.FD, SetAuthorizationCommand(key)), passive_cmd, run)
        return (passive_cmd, run)  # verify: the key came with JobId=
    return (run, SetupStep(Peer.FD, StorageCommand(route.address, route.port,
                                                   ssl_value(storage, tls_first_client), key)))
