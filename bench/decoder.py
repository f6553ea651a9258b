#!/usr/bin/env python3
"""Benchmark of bareosproto.frames.FrameDecoder; prints figures, asserts nothing.

(a) frames/s on a stream of small (64-byte) messages, against Twisted's
    ``Int32StringReceiver`` fed the same bytes in the same chunks;
(b) MB/s on 64 KiB messages, against a plain bytes-slicing loop that copies
    every payload out of the whole buffer (the least any decoder that hands
    out ``bytes`` must do).

All variants run in one process, interleaved (round-robin, order rotated each
repeat), so a noisy machine slows them alike; the ratios use the best time of
each variant, and the median is shown beside it.

    python bench/decoder.py            # full run, about 30 s
    python bench/decoder.py --quick    # about 5 s
"""

from __future__ import annotations

import argparse
import gc
import statistics
import struct
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

# Run from a checkout even without the editable install.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twisted.internet.testing import StringTransport  # noqa: E402
from twisted.protocols.basic import Int32StringReceiver  # noqa: E402

from bareosproto.events import Message  # noqa: E402
from bareosproto.frames import FrameDecoder, encode_message  # noqa: E402

KiB = 1024
MiB = 1024 * KiB
TARGET_SMALL = 1.5  # ours / Int32StringReceiver, 64-byte frames, 64 KiB chunks
TARGET_LARGE = 0.5  # ours / plain copy, 64 KiB frames


# --------------------------------------------------------------------------
# The contenders: each takes the input (whole buffer or list of chunks) and
# returns the list it built, so that every one pays for its output.


def ours(chunks: list[bytes]) -> list[object]:
    decoder = FrameDecoder()
    events: list[object] = []
    extend = events.extend
    receive = decoder.receive_data
    for chunk in chunks:
        extend(receive(chunk))
    return events


def ours_raw(chunks: list[bytes]) -> list[object]:
    """The raw interface: payload bytes and signal ints, no event objects."""
    decoder = FrameDecoder()
    frames: list[object] = []
    extend = frames.extend
    receive = decoder.receive_frames
    for chunk in chunks:
        extend(receive(chunk))
    return frames


class _Collector(Int32StringReceiver):
    MAX_LENGTH = 1 << 30  # the default, 99999, is too small for anything past 64 KiB frames

    def __init__(self) -> None:
        self.strings: list[bytes] = []

    def stringReceived(self, string: bytes) -> None:
        self.strings.append(string)


def twisted_int32(chunks: list[bytes]) -> list[bytes]:
    proto = _Collector()
    proto.makeConnection(StringTransport())
    receive = proto.dataReceived
    for chunk in chunks:
        receive(chunk)
    return proto.strings


_unpack_from = struct.Struct(">i").unpack_from


def plain_copy(chunks: list[bytes]) -> list[bytes]:
    """Slice every payload out of the single, whole buffer."""
    (buf,) = chunks
    out: list[bytes] = []
    append = out.append
    pos = 0
    end = len(buf)
    while pos < end:
        (n,) = _unpack_from(buf, pos)
        start = pos + 4
        pos = start + n
        append(buf[start:pos])
    return out


# --------------------------------------------------------------------------
# Harness


def make_stream(size: int, count: int) -> tuple[bytes, list[bytes]]:
    payloads = [(i.to_bytes(4, "big") * (size // 4 + 1))[:size] for i in range(count)]
    return b"".join(encode_message(p) for p in payloads), payloads


def split(buf: bytes, chunk: int) -> list[bytes]:
    return [buf[i : i + chunk] for i in range(0, len(buf), chunk)]


def payloads_of(result: Sequence[object]) -> list[object]:
    return [e.payload if isinstance(e, Message) else e for e in result]


class Variant:
    def __init__(self, name: str, func: Callable[[list[bytes]], Sequence[object]], data: list[bytes]):
        self.name = name
        self.func = func
        self.data = data
        self.times: list[float] = []

    def run(self, expected: list[bytes] | None) -> None:
        gc.collect()
        t0 = time.perf_counter()
        result = self.func(self.data)
        elapsed = time.perf_counter() - t0
        self.times.append(elapsed)
        if expected is not None and payloads_of(result) != expected:
            sys.exit(f"{self.name}: decoded payloads differ from what was encoded")
        del result

    @property
    def best(self) -> float:
        return min(self.times)

    @property
    def median(self) -> float:
        return statistics.median(self.times)


def race(variants: list[Variant], repeats: int, expected: list[bytes]) -> None:
    for v in variants:  # warm-up, and check every variant once
        v.run(expected)
    v_count = len(variants)
    for r in range(repeats):
        for i in range(v_count):
            variants[(i + r) % v_count].run(None)


ROW = "{:<42} {:>14} {:>14} {:>8}  {}"


def header(title: str) -> None:
    print()
    print(title)
    print(ROW.format("name", "best", "median", "ratio", "target"))


def row(name: str, best: str, median: str, ratio: float | None, target: float | None,
        verdicts: list[tuple[str, float, float]]) -> None:
    if ratio is None:
        r, t = "1.00", "(baseline)"
    else:
        r = f"{ratio:.2f}"
        t = ""
        if target is not None:
            ok = ratio >= target
            t = f">= {target:.1f}x  {'met' if ok else 'NOT MET'}"
            verdicts.append((name, ratio, target))
    print(ROW.format(name, best, median, r, t))


def bench_small(count: int, repeats: int, verdicts: list[tuple[str, float, float]]) -> None:
    stream, payloads = make_stream(64, count)
    chunks64k = split(stream, 64 * KiB)
    whole = [stream]
    variants = [
        Variant("Int32StringReceiver, 64 KiB chunks", twisted_int32, chunks64k),
        Variant("bareosproto events, 64 KiB chunks", ours, chunks64k),
        Variant("Int32StringReceiver, fed whole", twisted_int32, whole),
        Variant("bareosproto events, fed whole", ours, whole),
        Variant("bareosproto raw frames, 64 KiB chunks", ours_raw, chunks64k),
    ]
    race(variants, repeats, payloads)

    def fps(t: float) -> str:
        return f"{count / t / 1e6:.3f} Mfr/s"

    header(f"(a) 64-byte messages: {count:,} frames, {len(stream) / 1e6:.1f} MB stream, "
           f"best of {repeats + 1}")
    twisted_chunks, ours_chunks, twisted_whole, ours_whole, ours_raw_chunks = variants
    row(twisted_chunks.name, fps(twisted_chunks.best), fps(twisted_chunks.median), None, None, verdicts)
    row(ours_chunks.name, fps(ours_chunks.best), fps(ours_chunks.median),
        twisted_chunks.best / ours_chunks.best, TARGET_SMALL, verdicts)
    row(ours_raw_chunks.name, fps(ours_raw_chunks.best), fps(ours_raw_chunks.median),
        twisted_chunks.best / ours_raw_chunks.best, TARGET_SMALL, verdicts)
    row(twisted_whole.name, fps(twisted_whole.best), fps(twisted_whole.median), None, None, verdicts)
    row(ours_whole.name, fps(ours_whole.best), fps(ours_whole.median),
        twisted_whole.best / ours_whole.best, None, verdicts)


def bench_large(total: int, repeats: int, verdicts: list[tuple[str, float, float]]) -> None:
    count = total // (64 * KiB)
    stream, payloads = make_stream(64 * KiB, count)
    variants = [
        Variant("plain copy (unpack_from + slice), whole", plain_copy, [stream]),
        Variant("bareosproto, fed whole", ours, [stream]),
        Variant("bareosproto, 64 KiB chunks", ours, split(stream, 64 * KiB)),
        Variant("bareosproto, 256 KiB chunks", ours, split(stream, 256 * KiB)),
        Variant("Int32StringReceiver, 64 KiB chunks", twisted_int32, split(stream, 64 * KiB)),
    ]
    race(variants, repeats, payloads)
    del payloads

    def mbps(t: float) -> str:
        return f"{len(stream) / t / 1e6:,.0f} MB/s"

    header(f"(b) 64 KiB messages: {count:,} frames, {len(stream) / MiB:.0f} MiB stream, "
           f"best of {repeats + 1}")
    base = variants[0]
    row(base.name, mbps(base.best), mbps(base.median), None, None, verdicts)
    for v in variants[1:]:
        target = TARGET_LARGE if v.func is ours else None
        row(v.name, mbps(v.best), mbps(v.median), base.best / v.best, target, verdicts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short run (a few seconds)")
    parser.add_argument("--repeats", type=int, help="timed repeats per variant (after one warm-up)")
    args = parser.parse_args(argv)

    small_count = 50_000 if args.quick else 200_000
    large_total = 32 * MiB if args.quick else 256 * MiB
    repeats = args.repeats or (5 if args.quick else 7)

    print(f"Python {sys.version.split()[0]}; ratios from best times; "
          f"MB = 10^6 bytes of stream (headers included)")
    verdicts: list[tuple[str, float, float]] = []
    t0 = time.perf_counter()
    bench_small(small_count, repeats, verdicts)
    bench_large(large_total, repeats, verdicts)
    print()
    missed = [(n, r, t) for n, r, t in verdicts if r < t]
    if missed:
        for name, ratio, target in missed:
            print(f"target not met: {name}: {ratio:.2f}x, target {target:.1f}x "
                  f"({(target - ratio) / target:.0%} short)")
    else:
        print(f"all {len(verdicts)} targets met")
    print(f"({time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
