"""An independent observer of the wire: what went over loopback for each HTTP request, and when.

The load-test suite measures TTFT and E2E from inside the client. A sceptic wants the same
figures from something that shares none of the suite's code and none of its process: this module
captures the TCP packets to and from one port on ``lo`` in a process of its own, with the
kernel's receive stamp of each packet, writes them to a standard pcap file (nanosecond stamps,
readable by Wireshark or tcpdump), and afterwards rebuilds each connection's byte streams and
the HTTP exchanges on them. For every request it reports (all on the wall clock, the scale of
``time.time()``):

- ``request_sent_at``: the packet that carried the request's last byte;
- ``first_content_at``: the packet that completed the first SSE ``data:`` line whose
  ``choices[0].delta.content`` is non-empty;
- ``done_at``: the packet that completed the ``data: [DONE]`` line;
- ``body_end_at``: the packet that carried the end of the body (the chunked terminator
  ``0\\r\\n\\r\\n``, or the last byte of a Content-Length body);
- the connection's 4-tuple and whether the request opened it (its SYN was seen and it was the
  connection's first request) or went on a kept-alive connection.

How it captures, and why this way: a raw ``AF_PACKET`` socket bound to ``lo`` with
``SO_TIMESTAMPNS``, in plain Python (no tcpdump binary, no packet library: the parsing needed
is IPv4 + TCP headers, a few lines of ``struct``). A classic BPF filter (the program ``tcpdump
-dd 'ip and tcp port P'`` prints) keeps the other loopback traffic out of the socket. The kernel
stamps each packet when it enters the receive path (``netif_rx``), before any socket or process
sees it, so the stamp does not depend on when the suite, or this observer, gets scheduled. On
loopback a packet socket sees every packet twice, once leaving (``PACKET_OUTGOING``) and once
arriving (``PACKET_HOST``); the capture keeps only the arriving copy, whose stamp is the one the
receiving socket is handed too. The drops the kernel counted for the capture socket
(``PACKET_STATISTICS``) are reported, so a lossy capture cannot pass for a complete one.

Needs root or CAP_NET_RAW (``capture_unavailable()`` says why not). IPv4 only (the gateway and
the suite talk over 127.0.0.1).

    .venv/bin/python -m benchmarks.wire capture --port 8080 --out wire.pcap   # until Ctrl-C
    .venv/bin/python -m benchmarks.wire analyse wire.pcap --port 8080          # JSON lines
"""

from __future__ import annotations

import argparse
import ctypes
import json
import resource
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from bisect import bisect_right
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, BinaryIO

ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
PACKET_HOST = 0
SOL_PACKET = 263
PACKET_STATISTICS = 6
SO_ATTACH_FILTER = 26
SO_RCVBUFFORCE = 33
SO_TIMESTAMPNS = 35  # asm-generic (x86-64, arm64); Python does not export the name
SNAPLEN = 262144  # loopback carries GSO super-packets of up to 64 KiB and more
TIMESPEC = struct.Struct("@ll")
PCAP_NS_MAGIC = 0xA1B23C4D
PCAP_HEADER = struct.Struct("<IHHiIII")
PCAP_RECORD = struct.Struct("<IIII")
LINKTYPE_ETHERNET = 1
TCP_FIN, TCP_SYN, TCP_RST, TCP_ACK = 0x01, 0x02, 0x04, 0x10

Conn = tuple[str, int, str, int]  # client ip, client port, server ip, server port


class CaptureError(RuntimeError):
    pass


# --- capture ------------------------------------------------------------------------------


def bpf_tcp_port(port: int) -> list[tuple[int, int, int, int]]:
    """Classic BPF for ``ip and tcp port PORT`` on an Ethernet-framed device (``lo`` is one):
    IPv4, TCP, first fragment, source or destination port. (code, jt, jf, k) per instruction."""
    accept, drop = 11, 12
    return [
        (0x28, 0, 0, 12),  # 0: ldh [12]            ethertype
        (0x15, 0, drop - 2, ETH_P_IP),  # 1: jeq IPv4
        (0x30, 0, 0, 23),  # 2: ldb [23]            IP protocol
        (0x15, 0, drop - 4, 6),  # 3: jeq TCP
        (0x28, 0, 0, 20),  # 4: ldh [20]            flags + fragment offset
        (0x45, drop - 6, 0, 0x1FFF),  # 5: jset fragment offset -> drop
        (0xB1, 0, 0, 14),  # 6: ldxb 4*([14]&0xf)   IP header length
        (0x48, 0, 0, 14),  # 7: ldh [x+14]          source port
        (0x15, accept - 9, 0, port),  # 8: jeq port
        (0x48, 0, 0, 16),  # 9: ldh [x+16]          destination port
        (0x15, 0, drop - 11, port),  # 10: jeq port
        (0x06, 0, 0, SNAPLEN),  # 11: accept
        (0x06, 0, 0, 0),  # 12: drop
    ]


def capture_unavailable() -> str | None:
    """Why this process cannot capture on loopback, or None when it can."""
    if not sys.platform.startswith("linux"):
        return "packet capture on loopback needs Linux (AF_PACKET)"
    try:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    except PermissionError:
        return "packet capture needs root or CAP_NET_RAW (an AF_PACKET socket could not be opened)"
    except OSError as exc:
        return f"an AF_PACKET socket could not be opened ({exc.strerror})"
    with sock:
        try:
            sock.bind(("lo", 0))
        except OSError as exc:
            return f"the capture socket could not bind to lo ({exc.strerror})"
    return None


def open_capture(port: int) -> socket.socket:
    # protocol 0: the socket receives nothing until bound, so no packet is queued before the
    # filter is attached (a socket opened for ETH_P_ALL would take every packet at once)
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    program = bpf_tcp_port(port)
    insns = b"".join(struct.pack("HBBI", *insn) for insn in program)
    buf = ctypes.create_string_buffer(insns)
    sock.setsockopt(
        socket.SOL_SOCKET, SO_ATTACH_FILTER, struct.pack("HL", len(program), ctypes.addressof(buf))
    )
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 64 << 20)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 20)
    sock.bind(("lo", ETH_P_ALL))  # Python converts the protocol to network byte order
    return sock


def wait_for_kernel_stamps(deadline_s: float = 5.0) -> None:
    """Return once the kernel stamps packets on arrival. It does so only while some socket asks
    (a system-wide switch, flipped a little later from a work queue); until then a packet socket
    is handed the time it was read. Probe: a loopback datagram read 50 ms after it was sent must
    carry a stamp from before the wait."""
    deadline = time.monotonic() + deadline_s
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx,
    ):
        rx.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        rx.bind(("127.0.0.1", 0))
        while True:
            sent = time.time()
            tx.sendto(b"probe", rx.getsockname())
            time.sleep(0.05)
            _, anc, _, _ = rx.recvmsg(16, socket.CMSG_SPACE(TIMESPEC.size))
            stamp = _stamp(anc)
            if stamp is not None and stamp / 1e9 < sent + 0.025:
                return
            if time.monotonic() > deadline:
                raise CaptureError("the kernel does not stamp received packets (SO_TIMESTAMPNS)")


def _stamp(ancdata: list[tuple[int, int, bytes]]) -> int | None:
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= TIMESPEC.size:
            sec, nsec = TIMESPEC.unpack_from(data)
            return int(sec) * 1_000_000_000 + int(nsec)
    return None


def capture(
    port: int, out: Path, stop: list[bool], ready: Callable[[], None] | None = None
) -> dict[str, int]:
    """Write every arriving IPv4 TCP packet to or from *port* on ``lo`` to *out* (pcap, ns
    stamps) until ``stop[0]`` is set, then drain what is queued. Returns the counts."""
    sock = open_capture(port)
    wait_for_kernel_stamps()
    written = outgoing = truncated = unstamped = 0
    cmsg = socket.CMSG_SPACE(TIMESPEC.size)
    with sock, out.open("wb") as fh:
        fh.write(PCAP_HEADER.pack(PCAP_NS_MAGIC, 2, 4, 0, 0, SNAPLEN, LINKTYPE_ETHERNET))
        if ready is not None:
            ready()

        def take() -> bool:
            nonlocal written, outgoing, truncated, unstamped
            try:
                data, anc, flags, addr = sock.recvmsg(SNAPLEN, cmsg, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return False
            if addr[2] != PACKET_HOST:  # the leaving copy of a loopback packet
                outgoing += 1
                return True
            if flags & socket.MSG_TRUNC:
                truncated += 1
            stamp = _stamp(anc)
            if stamp is None:
                unstamped += 1
                stamp = time.time_ns()
            fh.write(PCAP_RECORD.pack(stamp // 1_000_000_000, stamp % 1_000_000_000, len(data), len(data)))
            fh.write(data)
            written += 1
            return True

        while not stop[0]:
            if select.select([sock], [], [], 0.1)[0]:
                while take():  # everything queued, then wait again
                    pass
        while take():
            pass
        _, drops = struct.unpack("II", sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "written": written,
        "outgoing_copies_skipped": outgoing,
        "truncated": truncated,
        "unstamped": unstamped,
        "kernel_drops": drops,
        "cpu_ms": round((usage.ru_utime + usage.ru_stime) * 1000),  # the observer's own CPU time
    }


class Observer:
    """A capture on loopback *port* in a process of its own, for the time of a ``with`` block;
    ``requests()`` afterwards. Raises CaptureError when the capture cannot start."""

    def __init__(self, port: int, pcap: Path, ready_timeout_s: float = 30) -> None:
        self.port, self.pcap, self.ready_timeout_s = port, pcap, ready_timeout_s
        self.stats: dict[str, int] = {}
        self._proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> Observer:
        argv = [sys.executable, str(Path(__file__).resolve()), "capture", "--port", str(self.port)]
        self._proc = subprocess.Popen(
            [*argv, "--out", str(self.pcap)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        assert self._proc.stdout is not None
        ready, _, _ = select.select([self._proc.stdout], [], [], self.ready_timeout_s)
        line = self._proc.stdout.readline() if ready else ""
        if line.strip() != "ready":
            self._proc.kill()
            _, err = self._proc.communicate(timeout=10)
            raise CaptureError(f"the capture process did not start: {err.strip()[-500:] or 'no output'}")
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._proc is not None
        self._proc.send_signal(signal.SIGTERM)
        out, err = self._proc.communicate(timeout=60)
        lines = [line for line in out.splitlines() if line.startswith("{")]
        if self._proc.returncode != 0 or not lines:
            if kind is None:
                raise CaptureError(f"the capture process failed: {err.strip()[-500:] or 'no output'}")
            return
        self.stats = json.loads(lines[-1])

    def requests(self) -> list[WireRequest]:
        return analyse(read_pcap(self.pcap), self.port)


# --- packets and streams ------------------------------------------------------------------


@dataclass(frozen=True)
class Packet:
    at: float  # wall clock, s
    src: tuple[str, int]
    dst: tuple[str, int]
    seq: int
    flags: int
    payload: bytes


def read_pcap(path: Path) -> Iterator[Packet]:
    """The IPv4 TCP packets of a pcap file (Ethernet link type, µs or ns stamps)."""
    with path.open("rb") as fh:
        yield from _packets(fh)


def _packets(fh: BinaryIO) -> Iterator[Packet]:
    header = fh.read(PCAP_HEADER.size)
    if len(header) < PCAP_HEADER.size:
        return
    magic, _, _, _, _, _, linktype = PCAP_HEADER.unpack(header)
    if magic not in (PCAP_NS_MAGIC, 0xA1B2C3D4) or linktype != LINKTYPE_ETHERNET:
        raise CaptureError("pcap file: expected little-endian pcap with Ethernet frames")
    divisor = 1e9 if magic == PCAP_NS_MAGIC else 1e6
    while True:
        record = fh.read(PCAP_RECORD.size)
        if len(record) < PCAP_RECORD.size:
            return
        sec, frac, incl, _ = PCAP_RECORD.unpack(record)
        frame = fh.read(incl)
        packet = parse_frame(frame, sec + frac / divisor)
        if packet is not None:
            yield packet


def parse_frame(frame: bytes, at: float) -> Packet | None:
    if len(frame) < 14 + 20 or struct.unpack_from("!H", frame, 12)[0] != ETH_P_IP:
        return None
    ip = 14
    ihl = (frame[ip] & 0x0F) * 4
    total = struct.unpack_from("!H", frame, ip + 2)[0]
    if frame[ip + 9] != 6:
        return None
    if total == 0:  # TSO/GSO super-packet: the length field may not be filled in
        total = len(frame) - ip
    src_ip = socket.inet_ntoa(frame[ip + 12 : ip + 16])
    dst_ip = socket.inet_ntoa(frame[ip + 16 : ip + 20])
    tcp = ip + ihl
    sport, dport, seq, _ack, offset_flags = struct.unpack_from("!HHIIH", frame, tcp)
    data_offset = (offset_flags >> 12) * 4
    payload = frame[tcp + data_offset : ip + total]
    return Packet(at, (src_ip, sport), (dst_ip, dport), seq, offset_flags & 0x3F, bytes(payload))


@dataclass
class HalfStream:
    """One direction of a TCP connection: the bytes in sequence order and when each arrived."""

    isn: int | None = None
    segments: list[tuple[int, float, bytes]] = field(default_factory=list)

    def add(self, packet: Packet) -> None:
        if packet.flags & TCP_SYN:
            self.isn = packet.seq
        elif packet.payload:
            self.segments.append((packet.seq, packet.at, packet.payload))

    def assemble(self) -> Stream:
        """In sequence order; a retransmitted byte keeps its first arrival, and a byte that came
        out of order counts from when the bytes before it had arrived too (when a reader could
        have it). Stops at the first hole."""
        base = (self.isn + 1) if self.isn is not None else (self.segments[0][0] if self.segments else 0)
        ordered = sorted(((seq - base) & 0xFFFFFFFF, at, data) for seq, at, data in self.segments)
        data = bytearray()
        starts: list[int] = []
        times: list[float] = []
        for offset, at, payload in ordered:
            end = offset + len(payload)
            if offset > len(data) or end <= len(data):
                if offset > len(data):
                    break  # a hole: later bytes are not readable
                continue  # a retransmission of bytes already there
            at = max(at, times[-1]) if times else at
            starts.append(len(data))
            times.append(at)
            data += payload[len(data) - offset :]
        return Stream(bytes(data), starts, times)


@dataclass
class Stream:
    data: bytes
    starts: list[int]
    times: list[float]

    def at(self, offset: int) -> float:
        """When the byte at *offset* was on the wire (its packet's kernel stamp)."""
        return self.times[bisect_right(self.starts, offset) - 1]


# --- HTTP/1.1 and SSE ---------------------------------------------------------------------


@dataclass
class WireRequest:
    request_id: str | None  # the request's X-Request-Id header
    method: str
    path: str
    connection: Conn
    new_connection: bool  # the connection's SYN was seen and this was its first request
    index_on_connection: int
    syn_at: float | None  # the client's SYN, for a new connection
    request_sent_at: float
    status: int | None = None
    response_request_id: str | None = None
    headers_at: float | None = None  # end of the response's header block
    first_content_at: float | None = None
    done_at: float | None = None
    body_end_at: float | None = None
    content_events: int = 0
    # the kernel stamp of each packet that carried part of the response, in stream order
    packet_times: list[float] = field(default_factory=list, repr=False)

    def to_json(self) -> dict[str, Any]:
        found = asdict(self)
        del found["packet_times"]
        return found


def _head(data: bytes, pos: int) -> tuple[str, dict[str, str], int] | None:
    """(start line, headers by lower-case name, offset after the blank line), or None if the
    header block is not complete."""
    end = data.find(b"\r\n\r\n", pos)
    if end < 0:
        return None
    lines = data[pos:end].decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return lines[0], headers, end + 4


def _chunks(data: bytes, pos: int) -> tuple[list[tuple[int, int]], int] | None:
    """A chunked body from *pos*: ([(stream offset, length) of each chunk's data], offset after
    the terminator), or None if it is not complete."""
    pieces: list[tuple[int, int]] = []
    while True:
        eol = data.find(b"\r\n", pos)
        if eol < 0:
            return None
        size = int(data[pos:eol].split(b";")[0].strip() or b"0", 16)
        if size == 0:
            end = data.find(b"\r\n", eol + 2)  # no trailers are sent: the empty line follows
            return (pieces, end + 2) if end >= 0 else None
        if eol + 2 + size + 2 > len(data):
            return None
        pieces.append((eol + 2, size))
        pos = eol + 2 + size + 2


def _scan_sse(request: WireRequest, stream: Stream, pieces: list[tuple[int, int]]) -> None:
    """First content event and [DONE] in a response body given as (stream offset, length)
    pieces; a line's time is that of the packet carrying its newline."""
    body = b"".join(stream.data[o : o + n] for o, n in pieces)
    piece_starts: list[int] = []
    total = 0
    for _, n in pieces:
        piece_starts.append(total)
        total += n

    def wire_offset(body_offset: int) -> int:
        i = bisect_right(piece_starts, body_offset) - 1
        return pieces[i][0] + body_offset - piece_starts[i]

    pos = 0
    while True:
        nl = body.find(b"\n", pos)
        if nl < 0:
            return
        line = body[pos:nl].rstrip(b"\r")
        pos = nl + 1
        if not line.startswith(b"data:"):
            continue
        payload = line[5:].strip()
        if payload == b"[DONE]":
            if request.done_at is None:
                request.done_at = stream.at(wire_offset(nl))
            continue
        try:
            event = json.loads(payload)
            content = event["choices"][0]["delta"].get("content")
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            continue
        if content:
            request.content_events += 1
            if request.first_content_at is None:
                request.first_content_at = stream.at(wire_offset(nl))


def _responses(requests: list[WireRequest], stream: Stream) -> None:
    data, pos = stream.data, 0
    for request in requests:
        first = bisect_right(stream.starts, pos) - 1  # the packet with the response's first byte
        while True:  # skip interim (1xx) responses
            head = _head(data, pos)
            if head is None:
                return
            start, headers, body_at = head
            parts = start.split(" ")
            status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
            if not 100 <= status < 200:
                break
            pos = body_at
        request.status = status
        request.response_request_id = headers.get("x-request-id")
        request.headers_at = stream.at(body_at - 1)
        if request.method == "HEAD" or status in (204, 304):
            pos = body_at
            continue
        if "chunked" in headers.get("transfer-encoding", "").lower():
            found = _chunks(data, body_at)
            if found is None:  # still streaming when the capture stopped
                _scan_sse(request, stream, list(_partial_chunks(data, body_at)))
                request.packet_times = stream.times[first:]
                return
            pieces, end = found
        elif "content-length" in headers:
            end = body_at + int(headers["content-length"])
            if end > len(data):
                _scan_sse(request, stream, [(body_at, len(data) - body_at)])
                request.packet_times = stream.times[first:]
                return
            pieces = [(body_at, end - body_at)]
        else:  # delimited by the connection's close
            end = len(data)
            pieces = [(body_at, end - body_at)]
        _scan_sse(request, stream, pieces)
        if end > body_at:
            request.body_end_at = stream.at(end - 1)
        request.packet_times = stream.times[first : bisect_right(stream.starts, end - 1)]
        pos = end


def _partial_chunks(data: bytes, pos: int) -> Iterator[tuple[int, int]]:
    """The complete chunks of a chunked body that was cut off (a stream still open when the
    capture stopped)."""
    while True:
        eol = data.find(b"\r\n", pos)
        if eol < 0:
            return
        size = int(data[pos:eol].split(b";")[0].strip() or b"0", 16)
        if size == 0 or eol + 2 + size > len(data):
            return
        yield eol + 2, size
        pos = eol + 2 + size + 2


def _requests(conn: Conn, syn_at: float | None, stream: Stream) -> list[WireRequest]:
    data, pos = stream.data, 0
    found: list[WireRequest] = []
    while pos < len(data):
        head = _head(data, pos)
        if head is None:
            break
        start, headers, body_at = head
        method, _, rest = start.partition(" ")
        if "chunked" in headers.get("transfer-encoding", "").lower():
            chunked = _chunks(data, body_at)
            if chunked is None:
                break
            end = chunked[1]
        else:
            end = body_at + int(headers.get("content-length", "0"))
        if end > len(data):
            break
        index = len(found)
        found.append(
            WireRequest(
                request_id=headers.get("x-request-id"),
                method=method,
                path=rest.rpartition(" ")[0],
                connection=conn,
                new_connection=syn_at is not None and index == 0,
                index_on_connection=index,
                syn_at=syn_at if index == 0 else None,
                request_sent_at=stream.at(end - 1),
            )
        )
        pos = end
    return found


def analyse(packets: Iterator[Packet] | list[Packet], port: int) -> list[WireRequest]:
    """Every complete HTTP request a client sent to *port*, with its response's milestones, in
    the order the requests were sent. Connections whose SYN was not captured (opened before the
    capture) are left out: their streams cannot be aligned. A 4-tuple used again by a later
    connection (a new SYN) is a new connection."""
    halves: dict[tuple[Conn, int], tuple[HalfStream, HalfStream]] = {}
    syns: dict[tuple[Conn, int], float] = {}
    generation: dict[Conn, int] = {}
    for packet in packets:
        if packet.dst[1] == port:
            conn = (*packet.src, *packet.dst)
            to_server = True
        elif packet.src[1] == port:
            conn = (*packet.dst, *packet.src)
            to_server = False
        else:
            continue
        key = (conn, generation.setdefault(conn, 0))
        if to_server and packet.flags & TCP_SYN and not packet.flags & TCP_ACK:
            known = halves.get(key)
            if known is not None and known[0].isn not in (None, packet.seq):  # the tuple reused
                generation[conn] += 1
                key = (conn, generation[conn])
            syns.setdefault(key, packet.at)
        c2s, s2c = halves.setdefault(key, (HalfStream(), HalfStream()))
        (c2s if to_server else s2c).add(packet)
    found: list[WireRequest] = []
    for key, (c2s, s2c) in halves.items():
        if c2s.isn is None or s2c.isn is None:
            continue
        requests = _requests(key[0], syns.get(key), c2s.assemble())
        if s2c.segments:
            _responses(requests, s2c.assemble())
        found += requests
    found.sort(key=lambda r: r.request_sent_at)
    return found


# --- command line -------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    cap = sub.add_parser("capture", help="capture until SIGTERM/SIGINT; prints 'ready', then counts as JSON")
    cap.add_argument("--port", type=int, required=True)
    cap.add_argument("--out", type=Path, required=True)
    ana = sub.add_parser("analyse", help="one JSON line per HTTP request in a capture")
    ana.add_argument("pcap", type=Path)
    ana.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    if args.command == "analyse":
        for request in analyse(read_pcap(args.pcap), args.port):
            print(json.dumps(request.to_json()))
        return 0
    reason = capture_unavailable()
    if reason is not None:
        print(reason, file=sys.stderr)
        return 2
    stop = [False]

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop[0] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    stats = capture(args.port, args.out, stop, ready=lambda: print("ready", flush=True))
    print(json.dumps(stats), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
