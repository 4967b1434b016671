"""Run one simulator as a process, e.g. inside a lab network namespace.

    python -m tests.lab.simulators NAME --bind ADDR --port P [--lifetime S]
        [--cert CERT.pem --key KEY.pem] [simulator options]

NAME is winrm, tds, browser, tns, vsphere or papi (``--help`` after NAME lists the
options). Prints ``ready HOST PORT`` on stdout once listening (extra facts, such as
the ports chosen for SQL Server instances, go to stderr), then serves until
``--lifetime`` seconds have passed (default 600) or SIGTERM/SIGINT arrives.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any, Protocol

from . import server_ssl_context


class Runnable(Protocol):
    host: str
    port: int

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


def _instance(text: str) -> tuple[str, int]:
    name, sep, port = text.partition("=")
    if not sep or not name or not port.isdigit():
        raise argparse.ArgumentTypeError("expected NAME=PORT (PORT 0 = pick a free one)")
    return name, int(port)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tests.lab.simulators")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--bind", default="127.0.0.1", help="address to listen on")
    common.add_argument("--port", type=int, default=0, help="port (0 = pick a free one)")
    common.add_argument("--lifetime", type=float, default=600.0, help="seconds, then exit")
    common.add_argument("--cert", help="PEM certificate: serve TLS")
    common.add_argument("--key", help="PEM private key for --cert")
    sub = parser.add_subparsers(dest="name", required=True)

    winrm = sub.add_parser("winrm", parents=[common], help="WS-Management 5985/5986")
    winrm.add_argument("--identify", choices=["header", "any", "off"], default="header")
    winrm.add_argument("--product-version", default=None)

    tds = sub.add_parser("tds", parents=[common], help="SQL Server PRELOGIN + Browser")
    tds.add_argument("--version", default="15.0.2000")
    tds.add_argument("--browser-version", default="15.0.2000.5")
    tds.add_argument("--encryption", choices=["off", "on", "not_sup", "req"], default="off")
    tds.add_argument("--instance", type=_instance, action="append", default=[])
    tds.add_argument("--silent-instance", action="append", default=[])
    tds.add_argument("--browser-port", type=int, default=1434, help="UDP; 0 = free port")
    tds.add_argument("--no-browser", action="store_true")
    tds.add_argument("--server-name", default="SQLLAB")

    browser = sub.add_parser("browser", parents=[common], help="SQL Server Browser only")
    browser.add_argument("--instance", type=_instance, action="append", default=[])
    browser.add_argument("--version", default="15.0.2000.5")
    browser.add_argument("--server-name", default="SQLLAB")

    tns = sub.add_parser("tns", parents=[common], help="Oracle TNS listener 1521/2484")
    tns.add_argument("--service", action="append", default=[])
    tns.add_argument("--sid", action="append", default=[])
    tns.add_argument("--version", default="19.0.0.0.0")
    tns.add_argument("--resend", action="store_true")

    vsphere = sub.add_parser("vsphere", parents=[common], help="vSphere SDK /sdk")
    vsphere.add_argument("--version", default="8.0.2")
    vsphere.add_argument("--build", default="22385739")
    vsphere.add_argument("--api-version", default="8.0.2.0")
    vsphere.add_argument("--api-type", choices=["VirtualCenter", "HostAgent"], default="VirtualCenter")

    papi = sub.add_parser("papi", parents=[common], help="PowerScale PAPI 8080")
    papi.add_argument("--user", default="admin")
    papi.add_argument(
        "--password-env",
        default="PAPI_PASSWORD",
        help="environment variable holding the password (never on the command line)",
    )
    papi.add_argument("--latest", default="16")
    return parser


def build_simulator(args: argparse.Namespace) -> Runnable:
    tls: dict[str, Any] = {}
    if args.cert and args.name in ("tds", "browser"):
        # TDS encrypts inside PRELOGIN packets and the Browser is plain UDP
        raise SystemExit(f"{args.name}: --cert is not supported")
    if args.cert:
        tls["ssl_context"] = server_ssl_context(args.cert, args.key)
    host, port = args.bind, args.port
    if args.name == "winrm":
        from .winrm import UNAUTHENTICATED_PRODUCT_VERSION, WinRmServer

        return WinRmServer(
            host,
            port,
            identify=args.identify,
            product_version=args.product_version or UNAUTHENTICATED_PRODUCT_VERSION,
            **tls,
        )
    if args.name == "tds":
        from .tds import SqlServerLab

        return SqlServerLab(
            host,
            port,
            instances=dict(args.instance),
            silent_instances=tuple(args.silent_instance),
            browser=not args.no_browser,
            browser_port=args.browser_port,
            version=args.version,
            browser_version=args.browser_version,
            encryption=args.encryption,
            server_name=args.server_name,
        )
    if args.name == "browser":
        from .tds import BrowserServer

        return BrowserServer(
            host,
            port,
            instances=dict(args.instance),
            server_name=args.server_name,
            version=args.version,
        )
    if args.name == "tns":
        from .tns import TnsListener

        return TnsListener(
            host,
            port,
            services=args.service or ["ORCLPDB1"],
            sids=args.sid,
            version=args.version,
            resend=args.resend,
            **tls,
        )
    if args.name == "vsphere":
        from .vsphere import VsphereServer

        return VsphereServer(
            host,
            port,
            version=args.version,
            build=args.build,
            api_version=args.api_version,
            api_type=args.api_type,
            **tls,
        )
    from .papi import PapiServer

    return PapiServer(
        host,
        port,
        user=args.user,
        password=os.environ.get(args.password_env),
        latest=args.latest,
        **tls,
    )


async def serve(args: argparse.Namespace) -> None:
    simulator = build_simulator(args)
    await simulator.start()
    try:
        from .tds import SqlServerLab

        if isinstance(simulator, SqlServerLab):
            for name, port in simulator.instance_ports.items():
                print(f"instance {name} {port}", file=sys.stderr, flush=True)
            if args.no_browser is False:
                print(f"browser udp {simulator.browser_port}", file=sys.stderr, flush=True)
        print(f"ready {simulator.host} {simulator.port}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), args.lifetime)
    finally:
        await simulator.stop()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
