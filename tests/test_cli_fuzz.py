"""bareosproto-fuzz against a Director of ours (the Twisted shell) running in a subprocess.

The daemon is this library's own, so a correct fuzzer finds nothing; the
tests then break the expectation on purpose (``--canary`` and the
``expectation`` hook), stop the daemon, and aim at addresses that are not
loopback, to see that each of these is reported as it should be.
"""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from bareosproto import encode_message, password_key
from bareosproto.cli import fuzz
from bareosproto.cli.fuzz import Attempt, Fuzzer, Settings, TargetRefused, main, parse_target
from bareosproto.cram import AUTH_FAILED
from bareosproto.frames import TERMINATE

SERVER = r'''
import sys
from twisted.internet import reactor
from bareosproto import ResourceType, TlsPolicy, password_key
from bareosproto.connection import Credentials, Daemon, ServerConfig
from bareosproto.twisted import BareosServerFactory

TABLE = {
    (ResourceType.R_CONSOLE, "fuzz-console"): Credentials(password_key("fuzz-password"), TlsPolicy.NONE),
    (ResourceType.R_CONSOLE, "fuzz-psk"): Credentials(password_key("psk-password"), TlsPolicy.REQUIRED),
    (ResourceType.R_CLIENT, "fuzz-fd"): Credentials(password_key("fd-password"), TlsPolicy.NONE),
}
die_after = int(sys.argv[1])  # stop listening after this many connections (0: never)
config = ServerConfig(daemon=Daemon.DIRECTOR, name="fuzz-dir", lookup=lambda t, n: TABLE.get((t, n)),
                      failure_delay=0.05)


class Factory(BareosServerFactory):
    connections = 0

    def buildProtocol(self, addr):
        Factory.connections += 1
        if die_after and Factory.connections >= die_after:
            reactor.callLater(0.05, reactor.stop)
        return super().buildProtocol(addr)


port = reactor.listenTCP(0, Factory(config, reactor, lambda channel: None), interface="127.0.0.1")
print(port.getHost().port, flush=True)
reactor.run()
'''

COMMON = ["--failure-delay", "0.05", "--timeout", "2", "--rate", "200"]


class Daemon:
    def __init__(self, tmp: Path, die_after: int = 0) -> None:
        script = tmp / "director.py"
        script.write_text(SERVER)
        self.proc = subprocess.Popen(
            [sys.executable, str(script), str(die_after)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.strip().isdigit():
            self.stop()
            raise RuntimeError(f"the test Director did not start: {line!r} {self.proc.stderr.read()!r}")
        self.port = int(line)
        self.target = f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for f in (self.proc.stdout, self.proc.stderr):
            if f is not None:
                f.close()


@pytest.fixture(scope="module")
def director(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = Daemon(tmp_path_factory.mktemp("director"))
    yield d
    d.stop()


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    code = main(["--json", *args])
    out = capsys.readouterr().out
    return code, json.loads(out)


def _settings(director: Daemon, tmp_path: Path, **kw: Any) -> Settings:
    base: dict[str, Any] = dict(
        host="127.0.0.1", port=director.port, role="console", name="fuzz-console",
        key=password_key("fuzz-password"), failure_delay=0.05, timeout=2.0, rate=200.0, out=tmp_path / "out",
    )
    base.update(kw)
    return Settings(**base)


def _index_for(fz: Fuzzer, step: str, kind: str) -> int:
    """The first attempt index whose seeded plan is (step, kind)."""
    for index in range(1, 5000):
        planned_step, planned_kind, _, _ = fz.plan(index)
        if (planned_step, planned_kind) == (step, kind):
            return index
    raise AssertionError(f"no attempt plans {step}/{kind}")


# -- no findings against a conforming daemon ------------------------------------


def test_a_conforming_director_gives_no_finding(director: Daemon, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """Fuzzing our own Director (cleartext named console) finds nothing: every attempt's replies and
    close match the model, every step gets mutated, exit status 0 and no reproducer written."""
    code, report = run_json(capsys, "--connect", director.target, "--name", "fuzz-console", "--password",
                            "fuzz-password", "--count", "60", "--seed", "7", "--concurrency", "4",
                            "--out", str(tmp_path / "out"), *COMMON)
    assert report["findings"] == [], report["findings"]
    assert code == 0
    assert report["summary"]["attempts"] == 60 and report["summary"]["ok"] == 60
    assert set(report["summary"]["by_step"]) == set(fuzz.STEPS)
    assert report["daemon"]["qualified_name"] == "R_DIRECTOR::fuzz-dir"
    assert report["baseline"]["verdict"] == "ok"
    assert not (tmp_path / "out").exists()
    closed = [a for a in report["attempts"] if a["end"] in ("closed", "reset")]
    assert closed and len(closed) < 60  # some mutations are refused, some leave the login waiting


def test_tls_psk_and_client_initiated_give_no_finding(director: Daemon, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """Inside immediate TLS-PSK, and as a client-initiated FD, the Director also matches the model.
    (As a client, end-of-stream mutations are left out: see the half-close test below.)"""
    code, report = run_json(capsys, "--connect", director.target, "--name", "fuzz-psk", "--password",
                            "psk-password", "--tls", "psk", "--count", "30", "--seed", "2", "--concurrency",
                            "4", "--out", str(tmp_path / "psk"), *COMMON)
    assert (code, report["findings"]) == (0, [])
    assert report["tls"] == "psk" and report["daemon"]["ssl"] == 2
    code, report = run_json(capsys, "--connect", director.target, "--as", "client", "--name", "fuzz-fd",
                            "--password", "fd-password", "--count", "30", "--seed", "3", "--concurrency", "4",
                            "--skip-mutations", "eof", "--out", str(tmp_path / "client"), *COMMON)
    assert (code, report["findings"]) == (0, [])
    assert report["daemon"]["greeting"].startswith("[69] 1000 OK: fuzz-dir Version: ")


def test_text_report(director: Daemon, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The text report names the target, the daemon, the attempts per step and 'findings: none'."""
    code = main(["--connect", director.target, "--name", "fuzz-console", "--password", "fuzz-password",
                 "--count", "8", "--out", str(tmp_path / "out"), *COMMON])
    out = capsys.readouterr().out
    assert code == 0
    assert f"bareosproto-fuzz: {director.target} as console 'fuzz-console' (cleartext), seed 0" in out
    assert "daemon: R_DIRECTOR::fuzz-dir ssl=0" in out
    assert "attempts: 8 in " in out
    assert "results: ok 8, differs 0, hang 0, crash 0" in out
    assert out.rstrip().endswith("findings: none")


# -- the expected replies are Bareos' ------------------------------------------------


@pytest.mark.parametrize(
    ("step", "kind", "want_frame", "want_end"),
    [
        pytest.param("hello", "unknown-name", TERMINATE, "closed", id="bad-hello-terminate"),
        pytest.param("hello", "oversized", TERMINATE, "closed", id="oversized-header-terminate"),
        pytest.param("response", "wrong-key", encode_message(AUTH_FAILED), "closed", id="wrong-response-1999"),
        pytest.param("response", "newline", encode_message(AUTH_FAILED), "closed", id="response-newline-1999"),
        pytest.param("response", "standard-base64", encode_message(b"1000 OK auth\n"), "open",
                     id="standard-base64-accepted"),
        pytest.param("challenge", "reflect", encode_message(AUTH_FAILED), "closed", id="reflected-challenge-1999"),
        pytest.param("verdict", "failed", encode_message(AUTH_FAILED), "closed", id="bad-verdict-1999"),
    ],
)
def test_expected_reply_of_a_mutation(director: Daemon, tmp_path: Path, step: str, kind: str,
                                      want_frame: bytes, want_end: str) -> None:
    """Each mutation's expected reply is Bareos' rule (BNET_TERMINATE for a bad Hello or an oversized
    header, 1999 Authorization failed. for a bad response, challenge or verdict, 1000 OK auth for a
    response in standard base64), and the daemon gives exactly that."""
    fz = Fuzzer(_settings(director, tmp_path))
    base = fz.run_attempt(0)  # the baseline teaches it the daemon
    assert base.authenticated and fz.info.name == "fuzz-dir"
    att = fz.run_attempt(_index_for(fz, step, kind))
    assert (att.step, att.mutation) == (step, kind)
    assert want_frame in att.expected
    assert att.expected_end == want_end
    assert att.verdict == "ok", att.detail
    assert [f for _, f in att.received] == att.expected


def test_a_half_closed_client_still_gets_the_directors_refusal(director: Daemon, tmp_path: Path) -> None:
    """A client-initiated FD that ends its stream instead of sending its challenge still gets the
    Director's '1999 You are not authorized.' (the core's model: the socket is only half closed, and
    Bareos writes its refusal before it closes).  Found by this fuzzer."""
    fz = Fuzzer(_settings(director, tmp_path, role="client", name="fuzz-fd", key=password_key("fd-password")))
    assert fz.run_attempt(0).authenticated
    att = fz.run_attempt(_index_for(fz, "challenge", "eof"))
    assert encode_message(b"1999 You are not authorized.\n") in att.expected
    assert att.verdict == "ok", att.detail


def test_split_writes_expect_the_unmutated_replies(director: Daemon, tmp_path: Path) -> None:
    """Splitting a step into several writes changes nothing: the expected replies are those of the
    honest step (a Hello cut into pieces still gets the challenge)."""
    fz = Fuzzer(_settings(director, tmp_path))
    fz.run_attempt(0)
    att = fz.run_attempt(_index_for(fz, "hello", "split"))
    assert len(att.writes) >= 2
    assert b"".join(w.data for w in att.writes)[4:].startswith(b"Hello fuzz-console calling version ")
    assert len(att.expected) == 1 and att.expected[0][4:].startswith(b"auth cram-md5 <")
    assert att.expected_end == "open"
    assert att.verdict == "ok", att.detail


# -- findings are reported, with reproducers ----------------------------------------------


def test_a_wrong_expectation_is_a_finding_with_a_reproducer(director: Daemon, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """With every expectation flipped (--canary), every attempt is a finding, each with one JSON
    reproducer holding the exact bytes sent; exit status 1; replaying a reproducer with the real
    expectation gives no finding."""
    out = tmp_path / "findings"
    code, report = run_json(capsys, "--connect", director.target, "--name", "fuzz-console", "--password",
                            "fuzz-password", "--count", "5", "--canary", "--concurrency", "5", "--out", str(out),
                            *COMMON)
    assert code == 1
    assert len(report["findings"]) == 6  # the baseline and the five attempts
    files = sorted(out.glob("finding-*.json"))
    assert len(files) == 6
    assert {a["reproducer"] for a in report["findings"]} == {str(f) for f in files}
    verdicts = {a["verdict"] for a in report["findings"]}
    assert verdicts <= {"differs", "hang"} and verdicts
    for path in files:
        rep = json.loads(path.read_text())
        assert rep["target"] == director.target and rep["seed"] == 0
        assert "fuzz-password" not in path.read_text()
        sent = b"".join(base64.b64decode(w["b64"]) for w in rep["writes"])
        assert sent[4:].startswith(b"Hello fuzz-console calling version ") or rep["writes"][0]["mutated"]
        assert all(bytes.fromhex(w["hex"]) == base64.b64decode(w["b64"]) for w in rep["writes"])
        assert rep["expected"][-1]["shown"] == "[32] canary: this frame is never sent"
    attempt = next(f for f in files if not f.name.startswith("finding-00000"))
    code, replay = run_json(capsys, "--replay", str(attempt), "--password", "fuzz-password",
                            "--out", str(tmp_path / "again"), "--timeout", "2")
    assert code == 0 and replay["findings"] == []
    rep = json.loads(attempt.read_text())
    (again,) = replay["attempts"]
    assert (again["index"], again["step"], again["mutation"]) == (rep["index"], rep["step"], rep["mutation"])


def test_the_expectation_hook_flags_a_different_reply(director: Daemon, tmp_path: Path) -> None:
    """When the expected reply is deliberately wrong (a hook that expects 1000 OK auth where Bareos
    refuses), the attempt is reported as differing and its reproducer is written."""

    def wrong(att: Attempt, expected: tuple[list[bytes], str, float]) -> tuple[list[bytes], str, float]:
        frames, end, delay = expected
        if att.step == "response":
            return frames[:1] + [encode_message(b"1000 OK auth\n")], "open", 0.0
        return expected

    fz = Fuzzer(_settings(director, tmp_path), expectation=wrong)
    fz.run_attempt(0)
    att = fz.run_attempt(_index_for(fz, "response", "wrong-key"))
    assert att.verdict == "differs"
    assert "frame 2: expected [13] 1000 OK auth" in att.detail
    assert "got [27] 1999 Authorization failed." in att.detail
    fz._finding(att)
    assert att.reproducer is not None and Path(att.reproducer).exists()
    rep = json.loads(Path(att.reproducer).read_text())
    assert rep["verdict"] == "differs" and rep["step"] == "response" and rep["mutation"] == "wrong-key"
    assert [r["shown"] for r in rep["received"]][1] == "[27] 1999 Authorization failed.\\n"


def test_a_daemon_that_stops_accepting_is_a_crash(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A daemon that stops listening mid-run is reported as a crash; fuzzing stops early; exit 1."""
    d = Daemon(tmp_path, die_after=4)
    try:
        code, report = run_json(capsys, "--connect", d.target, "--name", "fuzz-console", "--password",
                                "fuzz-password", "--count", "50", "--out", str(tmp_path / "out"), *COMMON)
    finally:
        d.stop()
    assert code == 1
    assert report["crashed"] is True
    crashes = [a for a in report["findings"] if a["verdict"] == "crash"]
    assert crashes and crashes[0]["reproducer"]
    assert report["summary"]["attempts"] < 50


def test_no_daemon_is_a_setup_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Nothing listening, or a password the daemon refuses, stops before fuzzing with exit 2."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    assert main(["--connect", f"127.0.0.1:{free}", "--password", "x", "--out", str(tmp_path)]) == 2
    assert "cannot connect" in capsys.readouterr().err


def test_a_refused_login_is_a_setup_error(director: Daemon, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """A wrong password makes the baseline fail: exit 2 and a hint at the credentials."""
    code = main(["--connect", director.target, "--name", "fuzz-console", "--password", "wrong",
                 "--out", str(tmp_path), *COMMON])
    assert code == 2
    assert "did not authenticate" in capsys.readouterr().err


# -- loopback only -------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["10.0.0.1:9101", "192.168.1.10:9101", "172.16.0.1:9101", "8.8.8.8:53",
                                    "[2001:db8::1]:9101", "[::ffff:127.0.0.1]:9101", "0.0.0.0:9101",
                                    "example.com:9101", "localhost.example.com:9101", "127.0.0.1"])
def test_targets_outside_loopback_are_refused(target: str, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """Only 127.0.0.0/8 and ::1 are targets: anything else is refused with exit 2 before any socket
    or name lookup is made."""

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("a socket was opened for a refused target")

    monkeypatch.setattr(socket, "create_connection", forbidden)
    monkeypatch.setattr(socket, "getaddrinfo", forbidden)
    monkeypatch.setattr(socket, "socket", forbidden)
    assert main(["--connect", target, "--password", "x"]) == 2
    assert "refused" in capsys.readouterr().err
    with pytest.raises(TargetRefused):
        parse_target(target)


def test_loopback_targets_are_accepted() -> None:
    """127.0.0.0/8, ::1 and localhost (as 127.0.0.1) are accepted as targets."""
    assert parse_target("127.0.0.1:9101") == ("127.0.0.1", 9101)
    assert parse_target("127.42.0.7:1") == ("127.42.0.7", 1)
    assert parse_target("[::1]:9102") == ("::1", 9102)
    assert parse_target("localhost:9103") == ("127.0.0.1", 9103)


# -- limits and pacing ---------------------------------------------------------------------


def test_time_limit_bounds_the_run(director: Daemon, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--time stops starting attempts after that many seconds, whatever --count says."""
    started = time.monotonic()
    code, report = run_json(capsys, "--connect", director.target, "--name", "fuzz-console", "--password",
                            "fuzz-password", "--count", "100000", "--time", "1", "--out", str(tmp_path), *COMMON)
    assert code == 0
    assert 0 < report["summary"]["attempts"] < 100000
    assert time.monotonic() - started < 10


def test_rate_limit_and_failure_delay_pace_the_attempts(director: Daemon, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """--rate spaces attempt starts; after a refused attempt the worker waits --failure-delay
    before the next one."""
    started = time.monotonic()
    code, report = run_json(capsys, "--connect", director.target, "--name", "fuzz-console", "--password",
                            "fuzz-password", "--count", "6", "--rate", "5", "--failure-delay", "0",
                            "--timeout", "2", "--out", str(tmp_path))
    assert code == 0
    assert time.monotonic() - started >= 1.0  # six starts, 0.2 s apart
    started = time.monotonic()
    code, report = run_json(capsys, "--connect", director.target, "--name", "fuzz-console", "--password",
                            "fuzz-password", "--count", "4", "--steps", "hello", "--seed", "11",
                            "--failure-delay", "0.4", "--rate", "200", "--timeout", "2", "--out", str(tmp_path))
    elapsed = time.monotonic() - started
    assert code == 0
    refused = [a for a in report["attempts"] if a["end"] in ("closed", "reset")]
    assert refused
    assert elapsed >= 0.4 * len(refused)


def test_the_plan_of_an_attempt_depends_only_on_seed_and_index(tmp_path: Path) -> None:
    """Attempt N's step and mutation come from (seed, N) alone: same seed, same plan; another seed,
    another plan; --steps restricts the steps."""
    a = Fuzzer(Settings(host="127.0.0.1", port=1, seed=5))
    b = Fuzzer(Settings(host="127.0.0.1", port=1, seed=5))
    c = Fuzzer(Settings(host="127.0.0.1", port=1, seed=6))
    plan_a = [a.plan(i)[:2] for i in range(1, 60)]
    assert plan_a == [b.plan(i)[:2] for i in range(1, 60)]
    assert plan_a != [c.plan(i)[:2] for i in range(1, 60)]
    assert {s for s, _ in plan_a} == set(fuzz.STEPS)
    only = Fuzzer(Settings(host="127.0.0.1", port=1, steps=("verdict",)))
    assert {only.plan(i)[0] for i in range(1, 30)} == {"verdict"}


def test_mutators_change_the_step_as_described() -> None:
    """Framing mutators do what their name says: an oversized header, a signal, an empty message,
    a truncated frame, an extra frame, and split writes that add up to the original."""
    import random

    frame = encode_message(b"Hello fuzz-console calling\n")
    ctx = fuzz._Context(Settings(host="127.0.0.1", port=1, name="fuzz-console"), None, None, b"R_DIRECTOR::d")

    def writes(kind: str) -> list[bytes]:
        w, eof, _ = fuzz._mutate("hello", kind, frame, random.Random(1), ctx)
        assert not eof
        return [x.data for x in w]

    (big,) = writes("oversized")
    assert int.from_bytes(big[:4], "big") > 1_000_000 and big[4:] == frame[4:]
    (sig,) = writes("signal")
    assert len(sig) == 4 and int.from_bytes(sig, "big", signed=True) < 0
    assert writes("empty") == [encode_message(b"")]
    (cut,) = writes("truncate")
    assert frame.startswith(cut) and len(cut) < len(frame)
    (extra,) = writes("extra")
    assert extra.startswith(frame) and len(extra) > len(frame)
    pieces = writes("split")
    assert len(pieces) >= 2 and b"".join(pieces) == frame
    w, eof, _ = fuzz._mutate("hello", "eof", frame, random.Random(1), ctx)
    assert (w, eof) == ([], True)
    (before,) = writes("signal-before")
    assert before[4:] == frame and int.from_bytes(before[:4], "big", signed=True) < 0


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    """--help lists the options of the brief and says the tool is loopback only."""
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for option in ("--connect", "--as", "--name", "--password", "--tls", "--count", "--time", "--rate",
                   "--failure-delay", "--concurrency", "--seed", "--out", "--json", "--replay"):
        assert option in out
    assert "loopback" in out
