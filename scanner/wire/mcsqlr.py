"""SQL Server Browser ([MC-SQLR], Microsoft's open specification): request and answer.

- 2.2.2 CLNT_UCAST_EX: the single byte 0x03 asks one host for all its instances
  (0x02, CLNT_BCAST_EX, is the same question broadcast).
- 2.2.5 SVR_RESP: 0x05, RESP_SIZE (little-endian USHORT), RESP_DATA: per instance
  ``ServerName;H;InstanceName;I;IsClustered;No;Version;V;tcp;PORT;np;\\\\H\\pipe\\...;;``,
  key/value pairs separated by ``;`` and each instance ended by ``;;`` (at most
  1,024 bytes per instance, 65,535 in all).

    info = parse_svr_resp(reply)     # raises McsqlrError on anything else
    info[0].name, info[0].tcp_port
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

CLNT_BCAST_EX = 0x02
CLNT_UCAST_EX = 0x03
SVR_RESP = 0x05
MAX_INSTANCES = 256  # no host runs more; the cap keeps a hostile answer small
DEFAULT_INSTANCE = "MSSQLSERVER"


class McsqlrError(ValueError):
    """The datagram is not an SVR_RESP; the text says what is wrong."""


@dataclass(frozen=True)
class BrowserInstance:
    server: str
    name: str
    version: str | None
    tcp_port: int | None
    pipe: str | None
    clustered: bool | None
    invalid_tcp: str | None = None  # the tcp value when it is not a port number

    @property
    def is_default(self) -> bool:
        return self.name.upper() == DEFAULT_INSTANCE

    def evidence(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "version": self.version,
            "tcp_port": self.tcp_port,
            "np_pipe": self.pipe,
            "clustered": self.clustered,
        }
        if self.invalid_tcp is not None:
            out["invalid_tcp"] = self.invalid_tcp
        return out


def ucast_ex() -> bytes:
    return bytes([CLNT_UCAST_EX])


def looks_like_svr_resp(data: bytes) -> bool:
    return len(data) >= 3 and data[0] == SVR_RESP


def _instance(tokens: list[str]) -> BrowserInstance:
    if len(tokens) % 2:
        raise McsqlrError("an instance entry has a key without a value")
    fields: dict[str, str] = {}
    for key, value in zip(tokens[0::2], tokens[1::2], strict=True):
        fields.setdefault(key.strip().lower(), value)
    name = fields.get("instancename")
    if not name:
        raise McsqlrError("an instance entry has no InstanceName")
    port: int | None = None
    invalid: str | None = None
    if "tcp" in fields:
        text = fields["tcp"].strip()
        if text.isascii() and text.isdigit() and len(text) <= 5 and 0 < int(text) <= 65535:  # not "¹⁴³³"
            port = int(text)
        else:  # one odd entry does not make the whole list garbage; it is reported as is
            invalid = text[:16]
    clustered_text = fields.get("isclustered", "").strip().lower()
    clustered = {"yes": True, "no": False}.get(clustered_text)
    return BrowserInstance(
        server=fields.get("servername", ""),
        name=name,
        version=fields.get("version"),
        tcp_port=port,
        pipe=fields.get("np"),
        clustered=clustered,
        invalid_tcp=invalid,
    )


def parse_svr_resp(data: bytes) -> list[BrowserInstance]:
    """The instances of an SVR_RESP datagram (bounded), or McsqlrError."""
    if len(data) < 3:
        raise McsqlrError(f"{len(data)} bytes is too short for an SVR_RESP")
    if data[0] != SVR_RESP:
        raise McsqlrError(f"first byte 0x{data[0]:02x} where the Browser answers 0x05")
    (size,) = struct.unpack_from("<H", data, 1)
    body = data[3:]
    if size > len(body):
        raise McsqlrError(f"RESP_SIZE says {size} bytes but {len(body)} arrived")
    # RESP_DATA is in the server's ANSI code page; latin-1 keeps every byte readable.
    text = body[:size].decode("latin-1")
    if not text.endswith(";;"):
        raise McsqlrError("RESP_DATA does not end with ';;'")
    instances: list[BrowserInstance] = []
    for entry in text[:-2].split(";;"):
        if len(instances) >= MAX_INSTANCES:
            break
        instances.append(_instance(entry.split(";")))
    return instances
