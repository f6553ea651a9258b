"""bareosproto-fake daemons and bareosproto-probe, run as the commands a user runs.

The fake Director, FD and SD run in subprocesses on 127.0.0.1; the probe (another subprocess) and
python-bareos log into them.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator

import bareos.bsock
import pytest

from bareosproto.cli.fake import parse_peer
from bareosproto.tls_policy import TlsPolicy

PY = sys.executable


class Daemon:
    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([PY, "-m", "bareosproto.cli.fake", *args, "--failure-delay", "0.05"],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 20
        self.lines: list[str] = []
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            self.lines.append(line)
            m = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
            if m:
                self.port = int(m.group(1))
                return
        raise AssertionError("fake daemon did not start: " + "".join(self.lines))

    def stop(self) -> str:
        self.proc.terminate()
        out, _ = self.proc.communicate(timeout=10)
        return "".join(self.lines) + out


def probe(*args: str) -> tuple[int, dict[str, object]]:
    out = subprocess.run([PY, "-m", "bareosproto.cli.probe", "--json", "--timeout", "10", *args],
                         capture_output=True, text=True, timeout=60)
    return out.returncode, json.loads(out.stdout)


@pytest.fixture(scope="module")
def director() -> Iterator[Daemon]:
    d = Daemon("director", "--name", "fake dir", "--password", "dirpw", "--console", "admin:adminpw:none",
               "--console", "tls console:tlspw", "--client", "fake-fd:fdpw")
    yield d
    d.stop()


@pytest.fixture(scope="module")
def fd(director: Daemon) -> Iterator[Daemon]:
    d = Daemon("fd", "--name", "fake-fd", "--director", "fake dir:fdpw", "--director", "tray:traypw:monitor",
               "--connect-director", f"127.0.0.1:{director.port}")
    yield d
    d.stop()


def test_peer_option_grammar() -> None:
    """NAME:PASSWORD[:monitor][:policy]: names with spaces, passwords with colons, required by default."""
    p = parse_peer("my dir:pa:ss:monitor:none")
    assert (p.name, p.monitor, p.policy) == ("my dir", True, TlsPolicy.NONE)
    assert parse_peer("a:b").policy is TlsPolicy.REQUIRED and not parse_peer("a:b").monitor


def test_probe_console_logs_into_the_fake_director_in_clear(director: Daemon) -> None:
    """A named console with TLS off logs in without TLS and gets the version reply."""
    code, report = probe("--connect", f"127.0.0.1:{director.port}", "--as", "console", "--name", "admin",
                         "--password", "adminpw", "--tls", "none", "--command", "version")
    assert code == 0 and report["auth"] == "ok" and report["tls"] is None
    assert report["peer_name"] == "fake dir"
    assert report["reply"][0].startswith("fake dir Version: 26.0.0")


def test_probe_default_console_uses_tls_psk(director: Daemon) -> None:
    """The default console (*UserAgent*) is keyed with the Director password and requires TLS."""
    code, report = probe("--connect", f"127.0.0.1:{director.port}", "--as", "console", "--password", "dirpw",
                         "--command", "whoami")
    assert code == 0 and report["tls"]["version"] == "TLSv1.3"  # type: ignore[index]
    assert report["reply"][0] == "*UserAgent*\n"
    assert report["info"].endswith("You are connected using the default console")  # type: ignore[union-attr]


def test_probe_reports_a_refusal_with_exit_status_1(director: Daemon) -> None:
    """A wrong password is reported as refused and the exit status is 1."""
    code, report = probe("--connect", f"127.0.0.1:{director.port}", "--as", "console", "--name", "tls console",
                         "--password", "wrong")
    assert code == 1 and report["auth"] == "refused"


def test_cleartext_console_where_tls_is_required_is_terminated(director: Daemon) -> None:
    """A console whose policy is required cannot log in in clear (immediate BNET_TERMINATE)."""
    code, report = probe("--connect", f"127.0.0.1:{director.port}", "--as", "console", "--name", "tls console",
                         "--password", "tlspw", "--tls", "none")
    assert code == 1 and report["auth"] in ("refused", "failed")


def test_client_initiated_fd_waits_in_the_status_table(director: Daemon, fd: Daemon) -> None:
    """The fake FD connects client-initiated; `status dir` lists it under Client Initiated Connections."""
    for _ in range(50):
        code, report = probe("--connect", f"127.0.0.1:{director.port}", "--as", "console", "--name", "admin",
                             "--password", "adminpw", "--tls", "none", "--command", "status dir")
        text = "".join(report["reply"])  # type: ignore[arg-type]
        if "fake-fd" in text:
            break
        time.sleep(0.1)
    assert "Client Initiated Connections (waiting for jobs):" in text
    row = next(line for line in text.splitlines() if line.rstrip().endswith("fake-fd"))
    assert re.fullmatch(r"\d\d-\w{3}-\d\d \d\d:\d\d     54 {18}1 {19}fake-fd {33}", row)


def test_python_bareos_json_console_reads_the_pool(director: Daemon, fd: Daemon) -> None:
    """python-bareos DirectorConsoleJson gets the client-connection array in API mode 2."""
    console = bareos.bsock.DirectorConsoleJson(address="127.0.0.1", port=director.port, name="admin",
                                               password=bareos.bsock.Password("adminpw"))
    try:
        for _ in range(50):
            result = console.call("status dir")
            if result["client-connection"]:
                break
            time.sleep(0.1)
        assert [c["name"] for c in result["client-connection"]] == ["fake-fd"]
        assert console.call("version")["version"]["name"] == "fake dir"
    finally:
        console.close()


def test_fake_fd_serves_status_and_restricts_monitors(fd: Daemon) -> None:
    """A Director gets status; a monitor Director gets 2997 for anything but status."""
    code, report = probe("--connect", f"127.0.0.1:{fd.port}", "--as", "director", "--peer", "fd", "--name",
                         "fake dir", "--password", "fdpw", "--command", "status")
    assert code == 0 and report["greeting"] == "2000 OK Hello 54"
    assert any("fake-fd Version:" in line for line in report["reply"])  # type: ignore[union-attr]
    code, report = probe("--connect", f"127.0.0.1:{fd.port}", "--as", "monitor", "--peer", "fd", "--name", "tray",
                         "--password", "traypw", "--command", "estimate")
    assert code == 0
    assert report["reply"] == ["2997 Invalid command for a Director with Monitor directive enabled.\n", "BNET_EOD"]


def test_fake_sd_starts_a_job_and_admits_its_data_channel() -> None:
    """The fake SD answers JobId= with a session key; an FD holding that key opens the data channel."""
    sd = Daemon("sd", "--name", "fake-sd", "--director", "fake dir:sdpw:none", "--tls-policy", "none")
    try:
        script = f"""
import sys
from twisted.internet import defer, task
from bareosproto.twisted import connect_to_sd, connect
from bareosproto.connection import ClientConnection, ConnectionType
from bareosproto import Secret, TlsPolicy
async def main(reactor):
    ch = await connect_to_sd(reactor, "tcp:host=127.0.0.1:port={{0}}".format({sd.port}), director_name="fake dir",
                             password="sdpw")
    reply = await ch.call("JobId=1 job=job.1 job_name=job client_name=fd type=66 level=70")
    line = reply[0].payload.decode()
    key = line.split("Authorization=")[1].strip()
    data = await connect(reactor, "tcp:host=127.0.0.1:port={{0}}".format({sd.port}), lambda: ClientConnection(
        ConnectionType.FD_SD, name="fd", key=Secret(key), job="job.1", clock=reactor.seconds))
    data.send(b"append open session\\n")
    print((await data.next_frame()).payload.decode(), end="")
    print(line)
task.react(lambda r: defer.Deferred.fromCoroutine(main(r)))
"""
        out = subprocess.run([PY, "-c", script], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        first, second = [line for line in out.stdout.splitlines() if line]
        assert first == "3000 OK open ticket = 1"
        assert re.fullmatch(r"3000 OK Job SDid=1 SDtime=\d+ Authorization=([A-P]{4}-){7}[A-P]{4}", second)
    finally:
        log = sd.stop()
    assert "'job.1' authenticated" in log
