"""A small DCOM simulator: RemoteCreateInstance for WMI and IWbemLevel1Login::NTLMLogin.

This is a SIMULATOR, not Windows: no Debian package serves DCOM, so the activation path of
the ``dcom`` probe is exercised against it. It implements only what the probe sends:

* DCE/RPC connection-oriented PDUs (C706 12.6): bind -> bind_ack carrying an NTLM CHALLENGE
  in its auth trailer (MS-RPCE 2.2.2.11, MS-NLMP 2.2.1.2); rpc_auth3 is checked the way a
  server does: the NTLMv2 proof (MS-NLMP 3.3.2) is recomputed from the configured password,
  and a wrong one answers the first request with fault 5 (rpc_s_access_denied), as Windows does;
* IRemoteSCMActivator::RemoteCreateInstance (opnum 4, MS-DCOM 3.1.2.5.2.3.2) answering an
  ActivationPropertiesOut blob (PropsOutInfo + ScmReplyInfoData, MS-DCOM 2.2.22.2.8/9) whose
  string binding names ``127.0.0.1[<object port>]``, or an HRESULT (E_ACCESSDENIED, ...);
* IWbemLevel1Login::NTLMLogin (opnum 6, MS-WMI 3.1.4.1.4) on the object port, answering an
  OBJREF_STANDARD for IWbemServices, or a WBEM HRESULT.

Messages are built with impacket's own NDR classes (the client parses them with the same).
Signatures on requests are not verified and answers carry none (impacket does not check them).
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import hmac
import os
import struct
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from impacket import ntlm
from impacket.dcerpc.v5 import dcomrt
from impacket.dcerpc.v5.dcom import wmi
from impacket.dcerpc.v5.dtypes import NULL
from impacket.uuid import string_to_bin

BIND, BIND_ACK, REQUEST, RESPONSE, FAULT, AUTH3, ALTER, ALTER_R = 11, 12, 0, 2, 3, 16, 14, 15
WBEM_LEVEL1_LOGIN = "f309ad18-d86a-11d0-a075-00c04fb68820"
NDR = string_to_bin("8a885d04-1ceb-11c9-9fe8-08002b104860") + struct.pack("<HH", 2, 0)


def _pdu(ptype: int, body: bytes, call_id: int, auth: bytes = b"") -> bytes:
    head = struct.pack("<BBBB4sHHI", 5, 0, ptype, 3, b"\x10\x00\x00\x00", 16 + len(body) + len(auth), 0, call_id)
    if auth:
        head = head[:10] + struct.pack("<H", len(auth) - 8) + head[12:]
    return head + body + auth


def _challenge(negotiate_flags: int, nonce: bytes) -> bytes:
    flags = (
        ntlm.NTLMSSP_NEGOTIATE_UNICODE | ntlm.NTLMSSP_NEGOTIATE_NTLM | ntlm.NTLMSSP_NEGOTIATE_TARGET_INFO
        | ntlm.NTLMSSP_TARGET_TYPE_SERVER | ntlm.NTLMSSP_REQUEST_TARGET | ntlm.NTLMSSP_NEGOTIATE_VERSION
    )  # fmt: skip
    for bit in (
        ntlm.NTLMSSP_NEGOTIATE_SIGN, ntlm.NTLMSSP_NEGOTIATE_EXTENDED_SESSIONSECURITY, ntlm.NTLMSSP_NEGOTIATE_128,
        ntlm.NTLMSSP_NEGOTIATE_56, ntlm.NTLMSSP_NEGOTIATE_KEY_EXCH, ntlm.NTLMSSP_NEGOTIATE_SEAL,
    ):  # fmt: skip
        if negotiate_flags & bit:
            flags |= bit
    av = ntlm.AV_PAIRS()
    av[ntlm.NTLMSSP_AV_DOMAINNAME] = av[ntlm.NTLMSSP_AV_DNS_DOMAINNAME] = "SIM".encode("utf-16le")
    av[ntlm.NTLMSSP_AV_HOSTNAME] = av[ntlm.NTLMSSP_AV_DNS_HOSTNAME] = "SIMHOST".encode("utf-16le")
    av[ntlm.NTLMSSP_AV_TIME] = struct.pack("<q", 116444736000000000 + calendar.timegm(time.gmtime()) * 10000000)
    msg = ntlm.NTLMAuthChallenge()
    msg["flags"] = flags
    domain = "SIM".encode("utf-16le")
    msg["domain_len"] = msg["domain_max_len"] = len(domain)
    msg["domain_offset"] = 40 + 16
    msg["challenge"] = nonce
    msg["domain_name"] = domain
    info = av.getData()
    msg["TargetInfoFields_len"] = msg["TargetInfoFields_max_len"] = len(info)
    msg["TargetInfoFields"] = info
    msg["TargetInfoFields_offset"] = 40 + 16 + len(domain)
    msg["Version"] = b"\xff" * 8
    msg["VersionLen"] = 8
    return bytes(msg.getData())


def _ntlmv2_ok(token: bytes, nonce: bytes, password: str) -> bool:
    """MS-NLMP 3.3.2: recompute NTProofStr from the password and compare."""
    try:
        answer = ntlm.NTLMAuthChallengeResponse()
        answer.fromString(token)
        user = answer["user_name"].decode("utf-16le")
        domain = answer["domain_name"].decode("utf-16le")
        nt = bytes(answer["ntlm"])
    except Exception:  # noqa: BLE001 - a malformed AUTH3 is simply not authenticated
        return False
    if len(nt) <= 24:
        return False
    key = ntlm.hmac_md5(ntlm.compute_nthash(password), (user.upper() + domain).encode("utf-16le"))
    return hmac.compare_digest(ntlm.hmac_md5(key, nonce + nt[16:]), nt[:16])


def _std_objref(iid: str, ipid: bytes, port: int) -> bytes:
    ref = dcomrt.OBJREF_STANDARD()
    ref["iid"] = string_to_bin(iid)
    ref["std"]["flags"] = dcomrt.SORF_NOPING
    ref["std"]["cPublicRefs"] = 5
    ref["std"]["oxid"] = b"\x11" * 8
    ref["std"]["oid"] = b"\x22" * 8
    ref["std"]["ipid"] = ipid
    ref["saResAddr"] = _dual_string_array_packed(port)
    return bytes(ref.getData())


def _bindings(port: int) -> tuple[list[int], int]:
    """A DUALSTRINGARRAY body as 16-bit units: one ncacn_ip_tcp binding, one NTLM security binding."""
    text = f"127.0.0.1[{port}]".encode("utf-16le") + b"\x00\x00"
    strings = struct.pack("<H", 7) + text + b"\x00\x00"
    security = struct.pack("<HH", 10, 0xFFFF) + b"\x00\x00" + b"\x00\x00"
    raw = strings + security
    return [struct.unpack("<H", raw[i : i + 2])[0] for i in range(0, len(raw), 2)], len(strings) // 2


def _dual_string_array_packed(port: int) -> bytes:
    units, sec = _bindings(port)
    return struct.pack("<HH", len(units), sec) + b"".join(struct.pack("<H", u) for u in units)


def activation_answer(iid: str, object_port: int, ipid: bytes) -> bytes:
    """RemoteCreateInstance's out parameters: ORPCTHAT, ActivationPropertiesOut, ErrorCode 0."""
    props = dcomrt.PropsOutInfo()
    props["cIfs"] = 1
    one_iid = dcomrt.IID()
    one_iid["Data"] = string_to_bin(iid)
    props["piid"].append(one_iid)
    hr = dcomrt.HRESULT()
    hr["Data"] = 0
    props["phresults"].append(hr)
    pointer = dcomrt.PMInterfacePointer()
    objref = _std_objref(iid, ipid, object_port)
    pointer["ulCntData"] = len(objref)
    pointer["abData"] = list(objref)
    props["ppIntfData"].append(pointer)
    props_raw = props.getData() + props.getDataReferents()
    props_raw += b"\xfa" * ((8 - len(props_raw) % 8) % 8)

    scm = dcomrt.ScmReplyInfoData()
    scm["pdwReserved"] = 0
    reply = scm["remoteReply"]
    reply["Oxid"] = b"\x11" * 8
    units, sec = _bindings(object_port)
    reply["pdsaOxidBindings"]["wNumEntries"] = len(units)
    reply["pdsaOxidBindings"]["wSecurityOffset"] = sec
    reply["pdsaOxidBindings"]["aStringArray"] = units
    reply["ipidRemUnknown"] = b"\x33" * 16
    reply["authnHint"] = 5  # RPC_C_AUTHN_LEVEL_PKT_INTEGRITY
    reply["serverVersion"]["MajorVersion"] = 5
    reply["serverVersion"]["MinorVersion"] = 7
    scm_raw = scm.getData() + scm.getDataReferents()
    scm_raw += b"\xfa" * ((8 - len(scm_raw) % 8) % 8)

    blob = dcomrt.ACTIVATION_BLOB()
    blob["CustomHeader"]["destCtx"] = 2
    blob["CustomHeader"]["cIfs"] = 1
    blob["CustomHeader"]["pdwReserved"] = NULL
    for clsid, raw in ((dcomrt.CLSID_PropsOutInfo, props_raw), (dcomrt.CLSID_ScmReplyInfo, scm_raw)):
        c = dcomrt.CLSID()
        c["Data"] = clsid
        blob["CustomHeader"]["pclsid"].append(c)
        size = dcomrt.DWORD()
        size["Data"] = len(raw)
        blob["CustomHeader"]["pSizes"].append(size)
    blob["Property"] = props_raw + scm_raw
    custom = dcomrt.OBJREF_CUSTOM()
    custom["iid"] = dcomrt.IID_IActivationPropertiesOut[:-4]
    custom["clsid"] = dcomrt.CLSID_ActivationPropertiesOut
    custom["pObjectData"] = blob.getData()
    custom["ObjectReferenceSize"] = len(custom["pObjectData"]) + 8
    out = dcomrt.RemoteCreateInstanceResponse()
    out["ORPCthat"]["flags"] = 0
    out["ORPCthat"]["extensions"] = NULL
    raw = custom.getData()
    out["ppActProperties"]["ulCntData"] = len(raw)
    out["ppActProperties"]["abData"] = list(raw)
    out["ErrorCode"] = 0
    return bytes(out.getData())


def error_answer(kind: str, code: int) -> bytes:
    """Out parameters with only an HRESULT: ORPCTHAT, a NULL interface pointer, ErrorCode."""
    out = dcomrt.RemoteCreateInstanceResponse() if kind == "activation" else wmi.IWbemLevel1Login_NTLMLoginResponse()
    out["ORPCthat"]["flags"] = 0
    out["ORPCthat"]["extensions"] = NULL
    out["ppActProperties" if kind == "activation" else "ppNamespace"] = NULL
    out["ErrorCode"] = code
    return bytes(out.getData())


def login_answer(ipid: bytes, port: int) -> bytes:
    out = wmi.IWbemLevel1Login_NTLMLoginResponse()
    out["ORPCthat"]["flags"] = 0
    out["ORPCthat"]["extensions"] = NULL
    objref = _std_objref("9556dc99-828c-11cf-a37e-00aa003240c7", ipid, port)  # IID_IWbemServices
    out["ppNamespace"]["ulCntData"] = len(objref)
    out["ppNamespace"]["abData"] = list(objref)
    out["ErrorCode"] = 0
    return bytes(out.getData())


def _oversized(good: bytes) -> bytes:
    """The interface pointer claims 4 GiB of data (ulCntData) but carries a few bytes."""
    return good[:8] + struct.pack("<I", 0x20000) + struct.pack("<I", 0xFFFFFFF0) + good[16:64]


def _bad_objref(good: bytes) -> bytes:
    """A well-formed pointer whose OBJREF has the wrong signature and an unknown flag."""
    body = b"XXXX" + struct.pack("<I", 0x7F) + os.urandom(40)
    return good[:8] + struct.pack("<III", 0x20000, len(body), len(body)) + body + b"\x00" * 4


# Hostile answers to a call, each from the good one: what a broken or malicious server sends.
HOSTILE = {
    "garbage": lambda good: os.urandom(len(good)),
    "truncated": lambda good: good[: len(good) // 3],
    "empty": lambda good: b"",
    "oversized": _oversized,
    "bad-objref": _bad_objref,
}


@dataclass
class DcomSimulator:
    """Two listeners: the activator (as on 135) and the object exporter (a 'dynamic' port).

    activation: "ok" | an HRESULT | a HOSTILE key, to answer RemoteCreateInstance with.
    login: "ok" | an HRESULT | a HOSTILE key, to answer NTLMLogin with.
    hand_out: the port named in the string binding (default: the object listener's own).
    """

    password: str
    activation: str | int = "ok"
    login: str | int = "ok"
    hand_out: int | None = None
    calls: list[str] = field(default_factory=list)
    logons: list[bool] = field(default_factory=list)
    object_port: int = 0
    sent: int = 0
    hung_up: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonce = os.urandom(8)
        authenticated = False
        try:
            while True:
                head = await asyncio.wait_for(reader.readexactly(16), 5)
                ptype = head[2]
                frag_len, auth_len = struct.unpack("<HH", head[8:12])
                call_id = struct.unpack("<I", head[12:16])[0]
                body = await reader.readexactly(frag_len - 16)
                token = body[len(body) - auth_len :] if auth_len else b""
                if ptype in (BIND, ALTER):
                    iface = body[16:36]
                    neg = ntlm.NTLMAuthNegotiate()
                    neg.fromString(token)
                    ack = struct.pack("<HHI", 5840, 5840, 0x5151) + struct.pack("<H", 4) + b"135\x00"
                    ack += b"\x00" * ((-len(ack)) % 4)
                    ack += struct.pack("<B3xHH", 1, 0, 0) + NDR
                    trailer = struct.pack("<BBBBI", 10, body[-auth_len - 7] if auth_len else 5, 0, 0, 79231)
                    self.calls.append(f"bind {iface[:16].hex()}")
                    answer = ALTER_R if ptype == ALTER else BIND_ACK
                    writer.write(_pdu(answer, ack, call_id, trailer + _challenge(neg["flags"], nonce)))
                elif ptype == AUTH3:
                    authenticated = _ntlmv2_ok(token, nonce, self.password)
                    self.logons.append(authenticated)
                    continue
                elif ptype == REQUEST:
                    opnum = struct.unpack("<H", body[6:8])[0]
                    self.calls.append(f"opnum {opnum}")
                    if not authenticated:
                        fault = struct.pack("<IHBBII", 32, 0, 0, 0, 5, 0)  # rpc_s_access_denied
                        writer.write(_pdu(FAULT, fault, call_id))
                    elif opnum == 4 and self.activation == "endless":
                        await self._endless(writer, call_id)
                        return
                    else:
                        stub = self._answer(opnum)
                        writer.write(_pdu(RESPONSE, struct.pack("<IHBB", len(stub), 0, 0, 0) + stub, call_id))
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.TimeoutError, OSError, struct.error):
            pass
        finally:
            writer.close()

    async def _endless(self, writer: asyncio.StreamWriter, call_id: int) -> None:
        """First fragments of an answer that never ends, until the client hangs up."""
        chunk = b"\x00" * 4000
        frag = bytearray(_pdu(RESPONSE, struct.pack("<IHBB", 1 << 30, 0, 0, 0) + chunk, call_id))
        frag[3] = 0x01  # first fragment only, never PFC_LAST_FRAG
        try:
            while True:
                writer.write(bytes(frag))
                await writer.drain()
                self.sent += len(frag)
                frag[3] = 0x00  # middle fragments
        except (ConnectionError, OSError):
            self.hung_up.set()

    def _answer(self, opnum: int) -> bytes:
        if opnum == 4:  # RemoteCreateInstance
            port = self.hand_out if self.hand_out is not None else self.object_port
            good = activation_answer(WBEM_LEVEL1_LOGIN, port, b"\x44" * 16)
            if isinstance(self.activation, str) and self.activation in HOSTILE:
                return HOSTILE[self.activation](good)
            if self.activation != "ok":
                return error_answer("activation", int(self.activation))
            return good
        if opnum == 6:  # NTLMLogin
            good = login_answer(b"\x55" * 16, self.object_port)
            if isinstance(self.login, str) and self.login in HOSTILE:
                return HOSTILE[self.login](good)
            if self.login != "ok":
                return error_answer("login", int(self.login))
            return good
        return error_answer("activation", 0x80004001)  # E_NOTIMPL


@contextlib.asynccontextmanager
async def serve_dcom(
    sim: DcomSimulator, bind: str = "127.0.0.1", port: int = 0, object_port: int = 0
) -> AsyncIterator[int]:
    """Start both listeners; yields the activator's port."""
    activator = await asyncio.start_server(sim.handle, bind, port)
    exporter = await asyncio.start_server(sim.handle, bind, object_port)
    sim.object_port = exporter.sockets[0].getsockname()[1]
    try:
        yield activator.sockets[0].getsockname()[1]
    finally:
        for server in (activator, exporter):
            server.close()
            await server.wait_closed()


async def _main(bind: str, port: int, object_port: int, lifetime: float) -> None:
    sim = DcomSimulator(os.environ.get("DCOM_SIM_PASSWORD", ""))
    async with serve_dcom(sim, bind, port, object_port) as listening:
        print(f"READY {listening} {sim.object_port}", flush=True)
        await asyncio.sleep(lifetime)


if __name__ == "__main__":  # inside a lab host: python -m tests.probes.dcom_sim --bind ADDR --port 135 ...
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tests.probes.dcom_sim")
    parser.add_argument("--bind", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=135)
    parser.add_argument("--object-port", type=int, default=49701)
    parser.add_argument("--lifetime", type=float, default=60.0)
    a = parser.parse_args()
    asyncio.run(_main(a.bind, a.port, a.object_port, a.lifetime))
