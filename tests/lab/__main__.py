"""Developer CLI: bring a lab up by hand, look at it, take it down.

    python -m tests.lab up        # DC + TLS peers + spare hosts; prints addresses, stays up
    python -m tests.lab status    # what runs (state files under /run/portready-lab)
    python -m tests.lab down      # tears down every lab on this machine; safe to repeat
    python -m tests.lab secret    # prints the test domain's admin password (only on request)
    python -m tests.lab demo      # a lab DC, `portready scan` of the AD profile against it, down

`demo` is the safe first run on a machine with no directory of its own: every packet stays
in the lab's namespaces. Extra arguments go to `portready scan` (e.g. --html report.html).

The lab outlives the command (its processes live in its namespaces); ``down`` finds them
again through the state file and the namespace tag.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from tests.lab.netns import Lab, lab_available
from tests.lab.samba_dc import SambaDC, provision_template, samba_available
from tests.lab.tls import TlsPeer, certs_for_host

TLS_PORTS = {"valid": 443, "expired": 8443, "self_signed": 9443, "wrong_name": 10443}


def cmd_up(args: argparse.Namespace) -> int:
    reason = lab_available() or samba_available()
    if reason:
        print(f"cannot start the lab: {reason}", file=sys.stderr)
        return 2
    started = time.monotonic()
    template = provision_template()
    lab = Lab(args.name, detached=True).up()
    try:
        dc = SambaDC(lab.add_host("dc1"), template, max_runtime=args.hours * 3600)
        dc.start()
        tls_host = lab.add_host("tls1")
        certs = certs_for_host(tls_host)
        for kind, port in TLS_PORTS.items():
            TlsPeer(tls_host, port, kind, certs=certs).start()
        h2, h3 = lab.add_host("h2"), lab.add_host("h3")
    except Exception:
        lab.down()
        raise
    lab._processes.clear()  # the processes stay; `down` finds them by namespace
    lab.extra = {
        "dc": {"address": dc.address, "address6": dc.address6, "fqdn": dc.fqdn,
               "realm": dc.realm, "domain": dc.domain, "admin_user": dc.admin_user,
               "template": str(template), "krb5_conf": str(dc.krb5_conf)},
        "tls": {"address": tls_host.ipv4, "ports": TLS_PORTS, "ca_bundle": str(certs.ca_bundle)},
        "hosts": {"h2": h2.ipv4, "h3": h3.ipv4},
    }  # fmt: skip
    lab.save()
    _print_lab(lab.state())
    print(f"\nup in {time.monotonic() - started:.1f} s; `python -m tests.lab down` removes it.")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """A throwaway lab DC, the real `portready scan` against it, then teardown."""
    from scanner.cli import main as portready

    reason = lab_available() or samba_available()
    if reason:
        print(f"cannot start the lab: {reason}", file=sys.stderr)
        return 2
    template = provision_template()
    with Lab("demo") as lab:
        dc = SambaDC(lab.add_host("dc1"), template).start()
        try:
            argv = [
                "scan", "--target", f"domain-controllers={dc.address}", "--target", f"dns-servers={dc.address}",
                "--set", "domain=lab.test", "--profile", "active-directory", *args.scan_args,
            ]
            print("portready " + " ".join(argv), flush=True)
            return portready(argv)
        finally:
            dc.stop()


def _print_lab(state: dict) -> None:  # type: ignore[type-arg]
    extra = state.get("extra", {})
    print(f"lab {state['tag']} ({state['name']}): 198.18.{state['subnet']}.0/24, "
          f"fd5e:0:{state['subnet']}::/64; Auditor side 198.18.{state['subnet']}.1")  # fmt: skip
    for name, h in state.get("hosts", {}).items():
        print(f"  {name:6} {h['ipv4']:16} {h['ipv6']:22} netns {h['netns']}")
    dc = extra.get("dc")
    if dc:
        print(f"\nDC {dc['fqdn']} realm {dc['realm']} (NetBIOS {dc['domain']}) at {dc['address']}")
        print(f"  user {dc['domain']}\\{dc['admin_user']}; password: python -m tests.lab secret")
        print(f"  KRB5_CONFIG={dc['krb5_conf']}")
        print("\ntry:")
        print(f"  portready scan --target domain-controllers={dc['address']} "
              "--profile active-directory")  # fmt: skip
    tls = extra.get("tls")
    if tls:
        peers = ", ".join(f"{k} :{p}" for k, p in tls["ports"].items())
        print(f"\nTLS peers on {tls['address']} (tls.lab.test): {peers}")
        print(f"  --ca-bundle {tls['ca_bundle']}")


def cmd_status(args: argparse.Namespace) -> int:
    states = Lab.existing()
    if args.json:
        print(json.dumps(states, indent=2))
        return 0
    if not states:
        print("no lab is running")
    for state in states:
        _print_lab(state)
        print()
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from tests.lab.netns import _pid_alive

    def chosen(state: dict) -> bool:  # type: ignore[type-arg]
        if args.tag is not None:
            return bool(state["tag"] == args.tag)
        # Not a lab that a live test session owns, unless --all.
        return args.all or state.get("detached") or not _pid_alive(int(state["owner_pid"]))

    states = [s for s in Lab.existing() if chosen(s)]
    for state in states:
        Lab.attach(state).down()
        print(f"lab {state['tag']} removed")
    if not states:
        print("no lab to remove")
    return 0


def cmd_secret(args: argparse.Namespace) -> int:
    for state in Lab.existing():
        template = state.get("extra", {}).get("dc", {}).get("template")
        if template:
            print(SambaDC.password_from_template(template))
            return 0
    print("no lab with a DC is running", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.lab", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start a lab with a DC and TLS peers; it stays up")
    up.add_argument("--name", default="devlab")
    up.add_argument("--hours", type=float, default=12.0, help="the DC stops itself after this")
    up.set_defaults(func=cmd_up)
    status = sub.add_parser("status", help="show running labs")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)
    down = sub.add_parser("down", help="remove hand-started and orphaned labs; safe to repeat")
    down.add_argument("--tag")
    down.add_argument("--all", action="store_true", help="also labs of running test sessions")
    down.set_defaults(func=cmd_down)
    secret = sub.add_parser("secret", help="print the test domain's admin password")
    secret.set_defaults(func=cmd_secret)
    demo = sub.add_parser("demo", help="scan a throwaway lab DC with the active-directory profile")
    demo.set_defaults(func=cmd_demo)
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "demo":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.scan_args = extra  # `demo` passes them on to `portready scan`
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
