"""Lan Address and data direction (``bareosproto.routing``), PROTOCOL.md 10.1-10.3.

The table below is written out by hand, one row per combination of: the client's (or reading
storage's) Lan Address set or not, the storage's (or writing storage's) set or not, the job
(backup, restore, verify, copy), active or passive client.  It states the rule: Lan Address
only when both ends have one, verify ignores it, passive clients are contacted by the SD, a
copy goes from the reading to the writing SD whatever ``passive`` says.
"""

from __future__ import annotations

import itertools

import pytest

from bareosproto.errors import LocalProtocolError
from bareosproto.jobcmds import (
    ListenCommand,
    PassiveClientCommand,
    ReplicateCommand,
    RunCommand,
    SetAuthorizationCommand,
    StorageCommand,
)
from bareosproto.keys import Secret
from bareosproto.routing import (
    JobKind,
    Peer,
    Route,
    SetupStep,
    Site,
    client_address_to_contact,
    data_route,
    director_setup,
    replication_address_to_contact,
    ssl_value,
    storage_address_to_contact,
)
from bareosproto.tls_policy import TlsPolicy

B, R, V, C = JobKind.BACKUP, JobKind.RESTORE, JobKind.VERIFY, JobKind.COPY
FD, SD, RSD, WSD = Peer.FD, Peer.SD, Peer.READING_SD, Peer.WRITING_SD

# (job, passive, first has Lan Address, second has Lan Address) ->
#   (connector, acceptor, address, port, commander, data from, data to)
# first = client (copy: reading storage) at first.wan:9102, Lan first.lan
# second = storage (copy: writing storage) at second.wan:9103, Lan second.lan
TABLE = {
    (B, False, False, False): (FD, SD, "second.wan", 9103, FD, FD, SD),
    (B, False, False, True): (FD, SD, "second.wan", 9103, FD, FD, SD),
    (B, False, True, False): (FD, SD, "second.wan", 9103, FD, FD, SD),
    (B, False, True, True): (FD, SD, "second.lan", 9103, FD, FD, SD),
    (B, True, False, False): (SD, FD, "first.wan", 9102, FD, FD, SD),
    (B, True, False, True): (SD, FD, "first.wan", 9102, FD, FD, SD),
    (B, True, True, False): (SD, FD, "first.wan", 9102, FD, FD, SD),
    (B, True, True, True): (SD, FD, "first.lan", 9102, FD, FD, SD),
    (R, False, False, False): (FD, SD, "second.wan", 9103, FD, SD, FD),
    (R, False, False, True): (FD, SD, "second.wan", 9103, FD, SD, FD),
    (R, False, True, False): (FD, SD, "second.wan", 9103, FD, SD, FD),
    (R, False, True, True): (FD, SD, "second.lan", 9103, FD, SD, FD),
    (R, True, False, False): (SD, FD, "first.wan", 9102, FD, SD, FD),
    (R, True, False, True): (SD, FD, "first.wan", 9102, FD, SD, FD),
    (R, True, True, False): (SD, FD, "first.wan", 9102, FD, SD, FD),
    (R, True, True, True): (SD, FD, "first.lan", 9102, FD, SD, FD),
    (V, False, False, False): (FD, SD, "second.wan", 9103, FD, SD, FD),
    (V, False, False, True): (FD, SD, "second.wan", 9103, FD, SD, FD),
    (V, False, True, False): (FD, SD, "second.wan", 9103, FD, SD, FD),
    (V, False, True, True): (FD, SD, "second.wan", 9103, FD, SD, FD),  # verify ignores Lan Address
    (V, True, False, False): (SD, FD, "first.wan", 9102, FD, SD, FD),
    (V, True, False, True): (SD, FD, "first.wan", 9102, FD, SD, FD),
    (V, True, True, False): (SD, FD, "first.wan", 9102, FD, SD, FD),
    (V, True, True, True): (SD, FD, "first.wan", 9102, FD, SD, FD),
    (C, False, False, False): (RSD, WSD, "second.wan", 9103, RSD, RSD, WSD),
    (C, False, False, True): (RSD, WSD, "second.wan", 9103, RSD, RSD, WSD),
    (C, False, True, False): (RSD, WSD, "second.wan", 9103, RSD, RSD, WSD),
    (C, False, True, True): (RSD, WSD, "second.lan", 9103, RSD, RSD, WSD),
    (C, True, False, False): (RSD, WSD, "second.wan", 9103, RSD, RSD, WSD),
    (C, True, False, True): (RSD, WSD, "second.wan", 9103, RSD, RSD, WSD),
    (C, True, True, False): (RSD, WSD, "second.wan", 9103, RSD, RSD, WSD),
    (C, True, True, True): (RSD, WSD, "second.lan", 9103, RSD, RSD, WSD),
}


def sites(first_lan: bool, second_lan: bool) -> tuple[Site, Site]:
    return (Site("first.wan", 9102, "first.lan" if first_lan else None),
            Site("second.wan", 9103, "second.lan" if second_lan else None))


def test_the_table_covers_every_combination() -> None:
    """4 jobs x active/passive x Lan Address on either end = 32 rows."""
    assert set(TABLE) == set(itertools.product(JobKind, (False, True), (False, True), (False, True)))


@pytest.mark.parametrize("key", sorted(TABLE, key=str), ids=lambda k: "-".join(map(str, (k[0].value, *k[1:]))))
def test_data_route(key: tuple[JobKind, bool, bool, bool]) -> None:
    """Who connects, to which address and port, who commands and where the data goes."""
    job, passive, first_lan, second_lan = key
    first, second = sites(first_lan, second_lan)
    assert data_route(job, first, second, passive=passive) == Route(*TABLE[key])


def test_the_three_address_functions_of_backup_cc() -> None:
    """StorageAddressToContact / ClientAddressToContact / the read-write storage form: the Lan
    Address of the contacted end, only when both ends have one."""
    client, storage = Site("c", 1, "c-lan"), Site("s", 2, "s-lan")
    assert storage_address_to_contact(client, storage) == "s-lan"
    assert client_address_to_contact(client, storage) == "c-lan"
    assert replication_address_to_contact(client, storage) == "s-lan"
    assert storage_address_to_contact(Site("c", 1), storage) == "s"
    assert client_address_to_contact(client, Site("s", 2)) == "c"


@pytest.mark.parametrize("tls,policy,tls_first,expected", [
    (True, TlsPolicy.REQUIRED, True, 4),
    (False, TlsPolicy.NONE, True, 0),
    (True, TlsPolicy.ENABLED, False, 1),
    (True, TlsPolicy.REQUIRED, False, 2),
    (False, TlsPolicy.NONE, False, 0),
])
def test_ssl_value(tls: bool, policy: TlsPolicy, tls_first: bool, expected: int) -> None:
    """``ssl=``: 4/0 by TlsEnable for TLS-first clients, the resource's policy for old ones."""
    assert ssl_value(Site("h", 1, tls=tls, policy=policy), tls_first) == expected


KEY = Secret("PLFJ-PILB-DNKA-HOLO-OHBO-PPFO-ELHE-ADMA")
CLIENT = Site("client.wan", 9102, "client.lan")
STORAGE = Site("storage.wan", 9103, "storage.lan", tls=True)


def test_backup_setup_lines_in_the_directors_order() -> None:
    """Active backup: ``storage address=`` to the FD, ``run`` to the SD; passive: ``passive client``
    to the SD, then ``run`` (PROTOCOL.md 10.2, 15.19)."""
    assert director_setup(B, CLIENT, STORAGE) == (
        SetupStep(FD, StorageCommand("storage.lan", 9103, 4)), SetupStep(SD, RunCommand()))
    assert director_setup(B, CLIENT, STORAGE, passive=True) == (
        SetupStep(SD, PassiveClientCommand("client.lan", 9102, 0)), SetupStep(SD, RunCommand()))
    assert director_setup(B, CLIENT, STORAGE)[0].command.to_bytes() == b"storage address=storage.lan port=9103 ssl=4\n"


def test_restore_and_verify_setup_lines() -> None:
    """Restore: ``run`` first, then ``storage address=... Authorization=<key>``; passive:
    ``setauthorization``, ``passive client``, ``run``.  Verify uses the plain addresses and its
    passive form has no ``setauthorization``."""
    assert director_setup(R, CLIENT, STORAGE, key=KEY) == (
        SetupStep(SD, RunCommand()), SetupStep(FD, StorageCommand("storage.lan", 9103, 4, KEY)))
    assert director_setup(R, CLIENT, STORAGE, key=KEY, passive=True) == (
        SetupStep(FD, SetAuthorizationCommand(KEY)), SetupStep(SD, PassiveClientCommand("client.lan", 9102, 0)),
        SetupStep(SD, RunCommand()))
    assert director_setup(V, CLIENT, STORAGE, key=KEY) == (
        SetupStep(SD, RunCommand()), SetupStep(FD, StorageCommand("storage.wan", 9103, 4, KEY)))
    assert director_setup(V, CLIENT, STORAGE, key=KEY, passive=True) == (
        SetupStep(SD, PassiveClientCommand("client.wan", 9102, 0)), SetupStep(SD, RunCommand()))
    with pytest.raises(LocalProtocolError):
        director_setup(R, CLIENT, STORAGE)


def test_copy_setup_lines() -> None:
    """Copy: ``listen`` to the writing SD, ``replicate`` with the writing job's id, name, port and
    key to the reading SD (``ssl=4`` if the writing storage has TLS), then ``run`` (15.26)."""
    read, write = Site("read.wan", 9103, "read.lan"), Site("write.wan", 9113, "write.lan", tls=True)
    steps = director_setup(C, read, write, key=KEY, job_id=30, job_name="copy.2026-11-30_09.50.00_40")
    assert steps == (
        SetupStep(WSD, ListenCommand()),
        SetupStep(RSD, ReplicateCommand(30, "copy.2026-11-30_09.50.00_40", "write.lan", 9113, 4, KEY)),
        SetupStep(RSD, RunCommand()),
    )
