"""DCE/RPC (connection-oriented, C706 chapter 12 + MS-RPCE) over asyncio streams.

Just enough of the protocol to prove that an RPC server answers: a BIND and its
BIND_ACK, and the two endpoint-mapper calls (C706 appendix O, MS-RPCE 2.2.1.2)
ept_lookup (list every endpoint) and ept_map (the port of one interface). The
PDUs are built and parsed here by hand, with every length checked against the
bytes actually received, so a hostile peer can only make us fail, never hang or
allocate much. No authentication: the mapper and a bind need none.

    reader, writer = await connect_tcp(ctx, 135)
    conn = RpcConnection(ctx, reader, writer)
    ack = await conn.bind(EPM)                      # BindAck(accepted=True, ...)
    entries = await ept_lookup(conn)                # [Endpoint(uuid, version, annotation, ...)]
    towers = await ept_map(conn, Interface("367abb81-...", 2, 0))

Everything that goes wrong on the wire raises ProbeError (fail/protocol with
words), like netio does for socket errors.
"""

from __future__ import annotations

import asyncio
import struct
import uuid as uuid_module
from dataclasses import dataclass

from scanner.models import Reason
from scanner.probes.base import ProbeContext, ProbeError, failed
from scanner.probes.netio import close_quietly, drain_within, read_exactly, wire_errors

# PDU types (C706 12.6.4).
REQUEST, RESPONSE, FAULT, BIND, BIND_ACK, BIND_NAK = 0, 2, 3, 11, 12, 13
ALTER_CONTEXT, ALTER_CONTEXT_RESP = 14, 15
PFC_FIRST_FRAG, PFC_LAST_FRAG = 0x01, 0x02
MAX_FRAG = 5840  # what Windows offers; we accept up to 65535 (the field's limit)
MAX_RESPONSE = 1 << 20  # a reassembled answer larger than this is not plausible here
EPT_S_NOT_REGISTERED = 0x16C9A0D6  # "no more entries" / "not registered" (C706 O.3)
NDR = ("8a885d04-1ceb-11c9-9fe8-08002b104860", 2)  # NDR 2.0 transfer syntax

# Tower floor protocol identifiers (C706 appendix I, MS-RPCE 2.2.1.1.x).
_FLOOR_NAMES = {0x07: "tcp", 0x08: "udp", 0x09: "ip", 0x0F: "np", 0x10: "lrpc", 0x11: "netbios", 0x1F: "http"}


@dataclass(frozen=True)
class Interface:
    """An RPC interface: UUID and version (major.minor)."""

    uuid: str
    major: int = 0
    minor: int = 0

    def __str__(self) -> str:
        return f"{self.uuid} v{self.major}.{self.minor}"


EPM = Interface("e1af8308-5d1f-11c9-91a4-08002b14a0fa", 3, 0)

# Names for UUIDs an admin will recognise in evidence (MS-* "Standards Assignments").
KNOWN_INTERFACES: dict[str, str] = {
    "e1af8308-5d1f-11c9-91a4-08002b14a0fa": "epmapper (RPC endpoint mapper)",
    "000001a0-0000-0000-c000-000000000046": "IRemoteSCMActivator (DCOM activation)",
    "99fcfec4-5260-101b-bbcb-00aa0021347a": "IObjectExporter (DCOM OXID resolver)",
    "4d9f4ab8-7d1c-11cf-861e-0020af6e7c57": "IRemoteActivation (DCOM)",
    "f6beaff7-1e19-4fbb-9f8f-b89e2018337c": "even6 (Windows Event Log remoting)",
    "82273fdc-e32a-18c3-3f78-827929dc23ea": "eventlog (Event Log, MS-EVEN)",
    "367abb81-9844-35f1-ad32-98f038001003": "svcctl (Service Control Manager)",
    "338cd001-2244-31f1-aaaa-900038001003": "winreg (Remote Registry)",
    "86d35949-83c9-4044-b424-db363231fd0c": "ITaskSchedulerService (Task Scheduler)",
    "12345778-1234-abcd-ef00-0123456789ab": "lsarpc (LSA)",
    "12345778-1234-abcd-ef00-0123456789ac": "samr (SAM)",
    "12345678-1234-abcd-ef00-01234567cffb": "netlogon",
    "e3514235-4b06-11d1-ab04-00c04fc2dcd2": "drsuapi (directory replication)",
    "12345678-1234-abcd-ef00-0123456789ab": "spoolss (print spooler)",
    "3919286a-b10c-11d0-9ba8-00c04fd92ef5": "dssetup",
    "c681d488-d850-11d0-8c52-00c04fd90f7e": "efsrpc (EFS)",
    "1ff70682-0a51-30e8-076d-740be8cee98b": "atsvc (AT scheduler)",
    "4fc742e0-4a10-11cf-8273-00aa004ae673": "netdfs (DFS)",
    "6bffd098-a112-3610-9833-46c3f87e345a": "wkssvc (workstation)",
    "4b324fc8-1670-01d3-1278-5a47bf6ee188": "srvsvc (server)",
    "e33c0cc4-0482-101a-bc0c-02608c6ba218": "rpcecho",
    "bf51c8d4-dc6c-4b2d-9ad3-a40dbe8a4da9": "unixinfo / Samba",
    "1d55b526-c137-46c5-ab79-638f2a68e869": "dnsserver",
    "50abc2a4-574d-40b3-9d66-ee4fd5fba076": "dnsserver (DNS management)",
    "3dde7c30-165d-11d1-ab8f-00805f14db40": "backupkey",
    "c9ac6db5-82b7-4e55-ae8a-e464ed7b4277": "FrsTransport / sysvol",
    "897e2e5f-93f3-4376-9c9c-fd2277495c27": "FRS2 (DFS-R)",
}


def uuid_bytes(text: str) -> bytes:
    return uuid_module.UUID(text).bytes_le


def uuid_text(raw: bytes) -> str:
    return str(uuid_module.UUID(bytes_le=raw))


def _syntax(iface: Interface) -> bytes:
    return uuid_bytes(iface.uuid) + struct.pack("<HH", iface.major, iface.minor)


def _header(ptype: int, body_len: int, call_id: int) -> bytes:
    # rpc_vers 5.0, first+last fragment, little-endian integers / ASCII / IEEE floats.
    return struct.pack(
        "<BBBB4sHHI", 5, 0, ptype, PFC_FIRST_FRAG | PFC_LAST_FRAG, b"\x10\x00\x00\x00",
        16 + body_len, 0, call_id,
    )  # fmt: skip


def bind_pdu(iface: Interface, call_id: int = 1, *, context_id: int = 0, ptype: int = BIND) -> bytes:
    """A BIND offering `iface` with the NDR 2.0 transfer syntax (C706 12.6.4.3); with
    ptype ALTER_CONTEXT, the same offer as one more context on an open association."""
    ndr = Interface(NDR[0], NDR[1], 0)
    body = struct.pack("<HHIB3x", MAX_FRAG, MAX_FRAG, 0, 1)
    body += struct.pack("<HBx", context_id, 1) + _syntax(iface) + _syntax(ndr)
    return _header(ptype, len(body), call_id) + body


def request_pdu(opnum: int, stub: bytes, call_id: int, context_id: int = 0) -> bytes:
    body = struct.pack("<IHH", len(stub), context_id, opnum) + stub
    return _header(REQUEST, len(body), call_id) + body


@dataclass(frozen=True)
class BindAck:
    accepted: bool
    result: int  # 0 acceptance, 1 user rejection, 2 provider rejection (C706 12.6.3.1)
    reason: int
    max_recv_frag: int
    secondary_address: str
    nak: bool = False

    def describe(self, asked: str = "bind") -> str:
        """In words; `asked` names the request answered (bind, alter_context)."""
        if self.accepted:
            return f"{asked} accepted"
        if self.nak:
            return f"{asked} refused (bind_nak, reason {self.reason})"
        why = {1: "abstract syntax (interface) not supported", 2: "transfer syntax not supported"}
        return f"{asked} rejected: {why.get(self.reason, f'reason {self.reason}')}"


class _Reader:
    """Bounds-checked little-endian reads over bytes; ValueError on overrun."""

    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data = data
        self.pos = pos

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise ValueError(f"needs {n} bytes at offset {self.pos}, only {len(self.data) - self.pos} left")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u16(self) -> int:
        return int(struct.unpack("<H", self.take(2))[0])

    def u32(self) -> int:
        return int(struct.unpack("<I", self.take(4))[0])

    def align(self, n: int) -> None:
        self.pos += (-self.pos) % n
        if self.pos > len(self.data):
            raise ValueError("alignment runs past the end")

    @property
    def left(self) -> int:
        return len(self.data) - self.pos


def parse_bind_ack(ptype: int, body: bytes) -> BindAck:
    """Parse a BIND_ACK / BIND_NAK body (after the 16-byte header). ValueError if malformed."""
    r = _Reader(body)
    if ptype == BIND_NAK:
        reason = r.u16() if r.left >= 2 else 0
        return BindAck(False, 2, reason, 0, "", nak=True)
    if ptype not in (BIND_ACK, ALTER_CONTEXT_RESP):  # the two answers share their layout
        raise ValueError(f"PDU type {ptype} where a bind_ack belongs")
    _max_xmit, max_recv, _assoc = r.u16(), r.u16(), r.u32()
    sec_len = r.u16()
    secondary = r.take(sec_len).rstrip(b"\x00").decode("ascii", "replace")
    r.align(4)
    n_results = r.take(4)[0]
    if n_results < 1:
        raise ValueError("bind_ack without a result")
    result, reason = r.u16(), r.u16()
    r.take(20)  # the transfer syntax the server picked
    return BindAck(result == 0, result, reason, max_recv, secondary)


def _protocol_error(ctx: ProbeContext, what: str, port: int | None = None) -> ProbeError:
    return ProbeError(
        failed(
            Reason.PROTOCOL,
            f"{ctx.where(port)} answered, but not DCE/RPC: {what}",
        )
    )


class RpcConnection:
    """One DCE/RPC association over a TCP stream (no authentication)."""

    def __init__(
        self, ctx: ProbeContext, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
        port: int | None = None,
    ) -> None:  # fmt: skip
        self.ctx = ctx
        self.reader = reader
        self.writer = writer
        self.port = port if port is not None else ctx.port
        self._call_id = 0

    def close(self) -> None:
        close_quietly(self.writer)

    def _next_call(self) -> int:
        self._call_id += 1
        return self._call_id

    async def _send(self, data: bytes) -> None:
        # A peer that stops reading is slowness (wire_errors: `no-reply`), not another protocol.
        with wire_errors(self.ctx, "DCE/RPC answer", port=self.port):
            self.writer.write(data)
            await drain_within(self.writer, self.ctx.step_timeout())

    async def read_pdu(self) -> tuple[int, int, int, bytes]:
        """(ptype, flags, call_id, body) of the next PDU; ProbeError if it is not DCE/RPC."""
        ctx = self.ctx.with_port(self.port) if self.port is not None else self.ctx
        head = await read_exactly(ctx, self.reader, 16, "DCE/RPC header")
        vers, _minor, ptype, flags, drep, frag_len, auth_len, call_id = struct.unpack("<BBBB4sHHI", head)
        if vers != 5:
            raise _protocol_error(self.ctx, f"the first bytes are {head[:8].hex()}, not a DCE/RPC v5 header", self.port)
        if drep[0] & 0x10 == 0:  # big-endian peer: re-read the integers
            frag_len, auth_len, call_id = struct.unpack(">HHI", head[8:16])
        if frag_len < 16 or auth_len > frag_len:
            raise _protocol_error(self.ctx, f"a PDU of impossible length {frag_len}", self.port)
        body = await read_exactly(ctx, self.reader, frag_len - 16, "DCE/RPC PDU body", started=True)
        if drep[0] & 0x10 == 0:
            raise _protocol_error(self.ctx, "a big-endian answer (not what Windows or Samba send)", self.port)
        if auth_len:
            body = body[: len(body) - auth_len - 8]
        return ptype, flags, call_id, body

    async def bind(self, iface: Interface) -> BindAck:
        await self._send(bind_pdu(iface, self._next_call()))
        ptype, _flags, _call, body = await self.read_pdu()
        try:
            return parse_bind_ack(ptype, body)
        except (ValueError, struct.error) as exc:
            raise _protocol_error(self.ctx, f"a malformed bind answer ({exc})", self.port) from None

    async def alter_context(self, iface: Interface, context_id: int = 1) -> BindAck | None:
        """Offer `iface` as one more context on this association (C706 12.6.4.1): the
        same question as a bind, without a connection of its own. None: the server
        answered with a FAULT, so it does not add contexts here (ask with a bind)."""
        await self._send(bind_pdu(iface, self._next_call(), context_id=context_id, ptype=ALTER_CONTEXT))
        ptype, _flags, _call, body = await self.read_pdu()
        if ptype == FAULT:
            return None
        try:
            return parse_bind_ack(ptype, body)
        except (ValueError, struct.error) as exc:
            raise _protocol_error(self.ctx, f"a malformed alter_context answer ({exc})", self.port) from None

    async def call(self, opnum: int, stub: bytes, context_id: int = 0) -> bytes:
        """One request; returns the reassembled response stub. A FAULT raises ProbeError."""
        call_id = self._next_call()
        await self._send(request_pdu(opnum, stub, call_id, context_id))
        out = bytearray()
        for _ in range(MAX_RESPONSE // 16):
            ptype, flags, got_call, body = await self.read_pdu()
            if ptype == FAULT:
                status = struct.unpack("<I", body[8:12])[0] if len(body) >= 12 else 0
                raise ProbeError(
                    failed(
                        Reason.PROTOCOL,
                        f"the RPC server on {self.ctx.where(self.port)} answered our call with a fault "
                        f"(status 0x{status:08x})",
                        fault=f"0x{status:08x}",
                    )
                )
            if ptype != RESPONSE or got_call != call_id or len(body) < 8:
                raise _protocol_error(
                    self.ctx, f"PDU type {ptype} (call {got_call}) where a response belongs", self.port
                )
            out += body[8:]
            if len(out) > MAX_RESPONSE:
                raise _protocol_error(self.ctx, "a response larger than 1 MiB", self.port)
            if flags & PFC_LAST_FRAG:
                return bytes(out)
        raise _protocol_error(self.ctx, "a response that never ends", self.port)  # pragma: no cover


# --------------------------------------------------------------------------- towers


@dataclass(frozen=True)
class Endpoint:
    """One entry of the endpoint mapper: an interface and where it listens."""

    uuid: str
    major: int
    minor: int
    annotation: str
    protocol: str  # tcp, udp, np, lrpc, http, ...
    port: int | None = None  # for tcp/udp/http
    address: str | None = None  # IP floor, or the pipe / lrpc name

    @property
    def interface(self) -> Interface:
        return Interface(self.uuid, self.major, self.minor)

    def to_evidence(self) -> dict[str, object]:
        out: dict[str, object] = {"uuid": self.uuid, "version": f"{self.major}.{self.minor}", "protocol": self.protocol}
        name = KNOWN_INTERFACES.get(self.uuid)
        if name:
            out["name"] = name
        if self.annotation:
            out["annotation"] = self.annotation[:64]
        if self.port is not None:
            out["port"] = self.port
        elif self.address:
            out["endpoint"] = self.address[:128]
        return out


def build_tower(iface: Interface, protocol: int = 0x07) -> bytes:
    """A map tower for `iface` over NDR, connection-oriented RPC, TCP port 0, IP 0.0.0.0."""
    ndr = Interface(NDR[0], NDR[1], 0)
    floors = [
        (b"\x0d" + uuid_bytes(iface.uuid) + struct.pack("<H", iface.major), struct.pack("<H", iface.minor)),
        (b"\x0d" + uuid_bytes(ndr.uuid) + struct.pack("<H", ndr.major), struct.pack("<H", ndr.minor)),
        (b"\x0b", struct.pack("<H", 0)),
        (bytes([protocol]), b"\x00\x00"),
        (b"\x09", b"\x00\x00\x00\x00"),
    ]
    out = struct.pack("<H", len(floors))
    for lhs, rhs in floors:
        out += struct.pack("<H", len(lhs)) + lhs + struct.pack("<H", len(rhs)) + rhs
    return out


_U32_LE = struct.Struct("<I").unpack_from
_U32X3_LE = struct.Struct("<III").unpack_from
_ENTRY = struct.Struct("<16xIII").unpack_from  # object UUID (skipped), referent, offset, length
_TOWER_HEAD = struct.Struct("<II").unpack_from  # max_count, length
# The tower nearly every mapper entry is: ncacn_ip_tcp, 5 floors of fixed sizes (interface,
# NDR, RPC CO, TCP port, IP address), read in one unpack; anything else takes the general path.
_TCP_TOWER = struct.Struct("<HHB16sHHHH19xH2xHxH2xHBHHHBH4B").unpack_from
_TCP_TOWER_SIZE = 75
_UUIDS: dict[bytes, str] = {}  # interface UUIDs seen (a few dozen exist): their text, built once
_MAX_UUIDS = 4096


def _overrun(n: int, pos: int, size: int) -> ValueError:
    """The error of a read of `n` bytes at `pos` from `size` bytes (the words of _Reader.take)."""
    return ValueError(f"needs {n} bytes at offset {pos}, only {size - pos} left")


def _first_overrun(sizes: tuple[int, ...], pos: int, size: int) -> ValueError:
    """The error of the first of consecutive reads of `sizes` bytes from `pos` that runs past `size`."""
    for n in sizes:
        if pos + n > size:
            return _overrun(n, pos, size)
        pos += n
    raise AssertionError("no read runs past the end")  # pragma: no cover - callers checked that one does


def _counted(data: bytes, pos: int, size: int) -> tuple[int, int]:
    """(start, length) of the u16-length-prefixed field at `pos` (a tower floor's side)."""
    if pos + 2 > size:
        raise _overrun(2, pos, size)
    length = data[pos] | data[pos + 1] << 8
    if pos + 2 + length > size:
        raise _overrun(length, pos + 2, size)
    return pos + 2, length


def _padded(pos: int, length: int, size: int) -> tuple[int, int]:
    """(end of the `length` bytes at `pos`, the position after their padding to 4 bytes)."""
    if pos + length > size:
        raise _overrun(length, pos, size)
    end = pos + length
    after = end + -end % 4
    if after > size:
        raise ValueError("alignment runs past the end")
    return end, after


def _uuid_of(raw: bytes) -> str:
    """The text of a 16-byte little-endian UUID (cached: a mapper lists a few dozen)."""
    text = _UUIDS.get(raw)
    if text is None:
        text = uuid_text(raw)
        if len(_UUIDS) < _MAX_UUIDS:
            _UUIDS[raw] = text
    return text


def parse_tower(data: bytes, annotation: str = "") -> Endpoint:
    """Decode a tower's floors (C706 appendix L). ValueError if malformed.

    One pass over offsets (no slice per floor): floor 0 is the interface, floors 1-2 the
    transfer syntax and RPC protocol, floors 3+ where it listens (port, host, pipe...).
    """
    size = len(data)
    if size >= _TCP_TOWER_SIZE:
        (count, l0, k0, uuid, major, r0, minor, l1, r1, l2, r2, l3, k3, r3, port_le, l4, k4, r4, a, b, c, d) = (
            _TCP_TOWER(data)
        )
        if (
            count == 5 and l0 == 19 and k0 == 0x0D and r0 == 2 and l1 == 19 and r1 == 2 and l2 == 1 and r2 == 2
            and l3 == 1 and k3 == 0x07 and r3 == 2 and l4 == 1 and k4 == 0x09 and r4 == 4
        ):  # fmt: skip
            text = _uuid_of(uuid)
            return Endpoint(text, major, minor, annotation, "tcp", (port_le & 0xFF) << 8 | port_le >> 8, f"{a}.{b}.{c}.{d}")
    elif size < 2:
        raise _overrun(2, 0, size)
    count = data[0] | data[1] << 8
    if count < 3 or count > 16:
        raise ValueError(f"a tower of {count} floors")
    pos = 2
    lhs0 = lhs0_len = rhs0 = rhs0_len = 0
    protocol, port, address = "unknown", None, None
    for i in range(count):
        lhs, lhs_len = _counted(data, pos, size)
        rhs, rhs_len = _counted(data, lhs + lhs_len, size)
        pos = rhs + rhs_len
        if i >= 3:
            if not lhs_len:
                continue
            kind = data[lhs]
            if kind in (0x07, 0x08, 0x1F) and rhs_len >= 2:
                protocol, port = _FLOOR_NAMES[kind], data[rhs] << 8 | data[rhs + 1]
            elif kind == 0x09 and rhs_len == 4:
                address = address or f"{data[rhs]}.{data[rhs + 1]}.{data[rhs + 2]}.{data[rhs + 3]}"
            elif kind in (0x0F, 0x10) or (kind == 0x11 and protocol == "unknown"):
                # ncacn_np towers carry the pipe (0x0f) and then the NetBIOS host (0x11).
                protocol = _FLOOR_NAMES[kind]
                address = data[rhs:pos].rstrip(b"\x00").decode("ascii", "replace")
        elif i == 0:
            lhs0, lhs0_len, rhs0, rhs0_len = lhs, lhs_len, rhs, rhs_len
    if lhs0_len != 19 or data[lhs0] != 0x0D or rhs0_len < 2:
        raise ValueError("the first floor is not an interface identifier")
    major = data[lhs0 + 17] | data[lhs0 + 18] << 8
    minor = data[rhs0] | data[rhs0 + 1] << 8
    return Endpoint(_uuid_of(data[lhs0 + 1 : lhs0 + 17]), major, minor, annotation, protocol, port, address)


# --------------------------------------------------------------------------- ept_lookup / ept_map


def ept_lookup_stub(handle: bytes, max_ents: int) -> bytes:
    # inquiry_type RPC_C_EP_ALL_ELTS, object NULL, Ifid NULL, vers_option RPC_C_VERS_ALL.
    return struct.pack("<III", 0, 0, 0) + struct.pack("<I", 1) + handle + struct.pack("<I", max_ents)


def parse_ept_lookup(stub: bytes) -> tuple[bytes, list[Endpoint], int, int]:
    """(entry_handle, endpoints, status, malformed towers) of an ept_lookup answer.

    Bounds are checked before each fixed-size group of fields is unpacked; an overrun
    names the first field that does not fit, as reading them one by one would.
    """
    size = len(stub)
    if size < 24:
        raise _first_overrun((20, 4), 0, size)
    handle = stub[:20]
    num = _U32_LE(stub, 20)[0]
    if num > 4096:
        raise ValueError(f"{num} entries announced")
    pos = 24
    entries: list[tuple[int, str]] = []
    if num or size - pos > 4:
        if pos + 12 > size:
            raise _first_overrun((4, 4, 4), pos, size)
        actual = _U32X3_LE(stub, pos)[2]
        pos += 12
        if actual != num:
            raise ValueError(f"{actual} entries sent, {num} announced")
        for _ in range(num):
            if pos + 28 > size:
                raise _first_overrun((16, 4, 4, 4), pos, size)
            ref, _off, length = _ENTRY(stub, pos)
            pos += 28
            if length > 64:
                raise ValueError(f"an annotation of {length} bytes (at most 64)")
            end, after = _padded(pos, length, size)
            text = stub[pos:end].split(b"\x00", 1)[0].decode("latin-1")
            pos = after
            entries.append((ref, text))
    endpoints: list[Endpoint] = []
    bad = 0
    for ref, text in entries:
        if not ref:
            continue
        if pos + 8 > size:
            raise _first_overrun((4, 4), pos, size)
        length = _TOWER_HEAD(stub, pos)[1]
        pos += 8
        end, after = _padded(pos, length, size)
        tower = stub[pos:end]
        pos = after
        try:
            endpoints.append(parse_tower(tower, text))
        except (ValueError, struct.error):
            bad += 1
    if pos + 4 > size:
        raise _overrun(4, pos, size)
    status = _U32_LE(stub, pos)[0]
    return handle, endpoints, status, bad


async def ept_lookup(
    conn: RpcConnection, max_entries: int = 1024, page: int = 500, max_pages: int = 20
) -> list[Endpoint]:
    """Every endpoint the mapper lists (bounded), paging with the entry handle.

    Samba ends with status EPT_S_NOT_REGISTERED ("no more entries") where Windows
    returns a null handle: both end the loop without an error.
    """
    handle = b"\x00" * 20
    out: list[Endpoint] = []
    for _page in range(max_pages):
        if len(out) >= max_entries:
            break
        stub = await conn.call(2, ept_lookup_stub(handle, page))
        try:
            handle, endpoints, status, _bad = parse_ept_lookup(stub)
        except (ValueError, struct.error) as exc:
            raise _protocol_error(conn.ctx, f"a malformed ept_lookup answer ({exc})", conn.port) from None
        out.extend(endpoints)
        if status != 0 or handle == b"\x00" * 20 or not endpoints:
            break
    return out[:max_entries]


def ept_map_stub(iface: Interface, protocol: int = 0x07, max_towers: int = 4) -> bytes:
    tower = build_tower(iface, protocol)
    stub = struct.pack("<I", 0)  # object: NULL
    stub += struct.pack("<III", 2, len(tower), len(tower)) + tower  # referent, max_count, length
    stub += b"\x00" * ((-len(stub)) % 4)
    return stub + b"\x00" * 20 + struct.pack("<I", max_towers)


def parse_ept_map(stub: bytes) -> tuple[list[Endpoint], int]:
    r = _Reader(stub)
    r.take(20)
    num = r.u32()
    _max, _offset, actual = r.u32(), r.u32(), r.u32()
    if actual > 64 or num > 64:
        raise ValueError(f"{actual} towers")
    refs = [r.u32() for _ in range(actual)]
    out: list[Endpoint] = []
    for ref in refs:
        if not ref:
            continue
        _m = r.u32()
        length = r.u32()
        tower = r.take(length)
        r.align(4)
        out.append(parse_tower(tower))
    status = r.u32()
    return out, status


async def ept_map(conn: RpcConnection, iface: Interface) -> list[Endpoint]:
    """The TCP endpoints of `iface`; empty when the mapper says it is not registered."""
    stub = await conn.call(3, ept_map_stub(iface))
    try:
        towers, status = parse_ept_map(stub)
    except (ValueError, struct.error) as exc:
        raise _protocol_error(conn.ctx, f"a malformed ept_map answer ({exc})", conn.port) from None
    if status == EPT_S_NOT_REGISTERED:
        return []
    if status != 0:
        raise ProbeError(
            failed(
                Reason.PROTOCOL,
                f"the endpoint mapper on {conn.ctx.where(conn.port)} answered ept_map with status 0x{status:08x}",
            )
        )
    return [t for t in towers if t.protocol == "tcp" and t.port]


def interface_name(uuid: str) -> str:
    return KNOWN_INTERFACES.get(uuid.lower(), uuid)
