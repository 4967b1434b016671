"""Network namespaces for the lab: one bridge in the root namespace, one namespace per host.

The test process is "the Auditor host": it stays in the root namespace and reaches every lab
host over a veth pair plugged into the lab's bridge::

    with Lab() as lab:
        dc = lab.add_host("dc1")           # 198.18.X.2, fd5e:0:X::2
        dc.run(["ip", "-br", "addr"])      # runs inside the namespace
        proc = dc.popen(["sleep", "60"])   # killed by lab.down()
        dc.firewall.drop(445)

Every interface and namespace name starts with a short random tag (``pr`` + 4 hex digits), so
several labs can run at once and ``down()`` finds all it made, even after a crash. The subnet
number X (1..250) is allocated under a lock file in ``STATE_DIR``; a state file per lab records
its tag, subnet and owner so a later run (or ``python -m tests.lab down``) can clean it up.

Only addresses from 198.18.0.0/15 and fd5e::/16 are used, never anything routable.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from tests.lab.firewall import Firewall

STATE_DIR = Path(os.environ.get("PORTREADY_LAB_STATE", "/run/portready-lab"))
WORK_ROOT = Path(os.environ.get("PORTREADY_LAB_WORK", "/var/tmp/portready-lab"))
MAX_SUBNET = 250
MAX_ALIASES = 250


class LabError(RuntimeError):
    """A lab command failed; the message carries the command and its stderr."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise LabError(f"ip {' '.join(args)}: {proc.stderr.strip()}")
    return proc


def _ip_batch(lines: Sequence[str], netns: str | None = None) -> None:
    """Run many `ip` commands in one process (250 aliases in ~10 ms instead of ~1 s)."""
    argv = ["ip"] + (["-n", netns] if netns else []) + ["-batch", "-"]
    proc = subprocess.run(argv, input="\n".join(lines) + "\n", capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise LabError(f"ip -batch: {proc.stderr.strip()}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def lab_available() -> str | None:
    """Why the lab cannot run here, or None when it can (root, `ip netns`, nft)."""
    if os.geteuid() != 0:
        return "the lab needs root (network namespaces, veth, nftables)"
    for tool in ("ip", "nft", "unshare"):
        if shutil.which(tool) is None:
            return f"the lab needs `{tool}` (run tests/lab/install.sh)"
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        return f"`ip netns` is unavailable: {probe.stderr.strip()}"
    return None


class Host:
    """One lab host: a network namespace with ``eth0`` on the lab bridge.

    ``ipv4``/``ipv6`` are the host's addresses as strings; ``run``/``popen`` execute a command
    inside the namespace (``ip netns exec``); processes from ``popen`` are killed by
    ``Lab.down()``.
    """

    def __init__(self, lab: Lab, name: str, index: int) -> None:
        self.lab = lab
        self.name = name
        self.index = index
        self.netns = f"{lab.tag}-{name}"
        self.ipv4 = f"198.18.{lab.subnet}.{index}"
        self.ipv6 = f"fd5e:0:{lab.subnet}::{index}"
        self.veth = f"{lab.tag}v{index}"
        self.aliases: list[str] = []
        self.firewall = Firewall(self)

    def __repr__(self) -> str:
        return f"Host({self.name!r}, ipv4={self.ipv4!r}, netns={self.netns!r})"

    def argv(self, argv: Sequence[str]) -> list[str]:
        """The command line that runs ``argv`` inside this host's namespace."""
        return ["ip", "netns", "exec", self.netns, *argv]

    def run(self, argv: Sequence[str], **kw: Any) -> subprocess.CompletedProcess[Any]:
        """``subprocess.run`` inside the namespace (same keyword arguments)."""
        check = kw.pop("check", False)
        return subprocess.run(self.argv(argv), check=check, **kw)

    def popen(self, argv: Sequence[str], **kw: Any) -> subprocess.Popen[Any]:
        """``subprocess.Popen`` inside the namespace, in its own process group, tracked."""
        kw.setdefault("start_new_session", True)
        proc = subprocess.Popen(self.argv(argv), **kw)
        self.lab._processes.append(proc)
        return proc

    def add_aliases(self, count: int) -> list[str]:
        """Add ``count`` extra IPv4 addresses (198.19.X.K/32) to eth0; returns them.

        The root namespace has an on-link route for 198.19.X.0/24 over the bridge, so the
        Auditor reaches every alias directly (ARP is answered by the host owning it).
        """
        start = self.lab._next_alias
        if count < 1 or start + count - 1 > MAX_ALIASES:
            raise LabError(f"at most {MAX_ALIASES} aliases per lab ({start - 1} used)")
        new = [f"198.19.{self.lab.subnet}.{k}" for k in range(start, start + count)]
        _ip_batch([f"addr add {a}/32 dev eth0" for a in new], netns=self.netns)
        self.lab._next_alias += count
        self.aliases.extend(new)
        return new


class RoutedSite:
    """Targets behind one router: ``router`` (on the bridge), ``far`` (owns ``addresses``).

    ``far.run``/``far.popen`` run commands where the targets live; ``router.run`` where the
    hop is (e.g. an nftables ICMP rate limit in its forward chain, see ``limit_icmp``).
    """

    def __init__(self, router: Host, far: Host, addresses: list[str]) -> None:
        self.router = router
        self.far = far
        self.addresses = addresses

    def limit_icmp(self, rate: int = 1000, burst: int = 50) -> None:
        """Rate-limit ICMP errors crossing the router the way Linux does (1000/s, burst 50)."""
        rules = (
            "table inet prsite {\n  chain forward {\n    type filter hook forward priority 0;\n"
            "    icmp type destination-unreachable limit rate over "
            f"{rate}/second burst {burst} packets counter drop\n  }}\n}}\n"
        )
        self.router.run(["nft", "-f", "-"], input=rules, text=True, check=True)

    def icmp_dropped(self) -> int:
        """How many ICMP errors the router's rate limit dropped so far (0 without a limit)."""
        out = self.router.run(["nft", "list", "table", "inet", "prsite"], capture_output=True, text=True).stdout
        marker = "counter packets "
        return int(out.split(marker, 1)[1].split()[0]) if marker in out else 0


class Lab:
    """A bridge in the root namespace plus hosts in namespaces; see the module docstring."""

    def __init__(self, name: str = "prlab", detached: bool = False) -> None:
        self.name = name
        self.tag = "pr" + secrets.token_hex(2)
        self.subnet = 0
        self.bridge = f"{self.tag}br"
        self.detached = detached  # True: outlives this process (`python -m tests.lab up`)
        self.hosts: dict[str, Host] = {}
        self.workdir = WORK_ROOT / self.tag
        self._processes: list[subprocess.Popen[Any]] = []
        self._next_alias = 1
        self.site_subnets: list[int] = []  # extra /24s claimed by routed sites
        self._extra_netns: list[str] = []
        self._up = False
        self.extra: dict[str, Any] = {}  # free-form data stored in the state file (CLI)

    # -- addresses -------------------------------------------------------------------------
    @property
    def gateway4(self) -> str:
        """The Auditor's (root namespace) IPv4 address on the lab bridge."""
        return f"198.18.{self.subnet}.1"

    @property
    def gateway6(self) -> str:
        """The Auditor's (root namespace) IPv6 address on the lab bridge."""
        return f"fd5e:0:{self.subnet}::1"

    @property
    def network4(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(f"198.18.{self.subnet}.0/24")

    @property
    def alias_network4(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(f"198.19.{self.subnet}.0/24")

    # -- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> Lab:  # noqa: PYI034 - typing.Self is 3.11+
        self.up()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.down()

    def up(self) -> Lab:
        """Create the bridge (198.18.X.1/24, fd5e:0:X::1/64) in the root namespace."""
        if self._up:
            return self
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        with self._alloc_lock():
            self.subnet = self._free_subnet()
            self._write_state()  # claim the subnet before releasing the lock
            try:
                _ip("link", "add", self.bridge, "type", "bridge", "forward_delay", "0")
                _ip_batch(
                    [
                        f"addr add {self.gateway4}/24 dev {self.bridge}",
                        f"addr add {self.gateway6}/64 dev {self.bridge} nodad",
                        f"link set {self.bridge} up",
                        (f"route add {self.alias_network4} dev {self.bridge} scope link src {self.gateway4}"),
                    ]
                )
            except Exception:
                self.down()
                raise
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._up = True
        return self

    def add_host(self, name: str) -> Host:
        """A new namespace on the bridge at 198.18.X.N / fd5e:0:X::N (N = 2, 3, ...)."""
        if not self._up:
            raise LabError("Lab.up() first")
        if name in self.hosts:
            raise LabError(f"host {name!r} exists")
        if len(name) > 10 or not name.replace("-", "").isalnum():
            raise LabError(f"host name {name!r}: letters/digits, at most 10 characters")
        host = Host(self, name, len(self.hosts) + 2)
        if host.index > 250:
            raise LabError("at most 249 hosts per lab")
        self.hosts[name] = host
        self._write_state()
        peer = f"{self.tag}p{host.index}"
        _ip("netns", "add", host.netns)
        # Before any interface exists: no ICMP rate limit (UDP "refused" must be reliable)
        # and no duplicate-address detection (addresses usable at once).
        host.run(
            [
                "sysctl", "-q", "-w",
                "net.ipv4.icmp_ratelimit=0",
                "net.ipv6.icmp.ratelimit=0",
                "net.ipv6.conf.all.accept_dad=0",
                "net.ipv6.conf.default.accept_dad=0",
            ],
            check=True, capture_output=True,
        )  # fmt: skip
        # Global ICMP budget (per namespace on recent kernels); best effort.
        host.run(
            ["sysctl", "-q", "-w", "net.ipv4.icmp_msgs_per_sec=100000",
             "net.ipv4.icmp_msgs_burst=100000"],
            check=False, capture_output=True,
        )  # fmt: skip
        _ip_batch(
            [
                f"link add {host.veth} type veth peer name {peer}",
                f"link set {peer} netns {host.netns}",
                f"link set {host.veth} master {self.bridge}",
                f"link set {host.veth} up",
            ]
        )
        _ip_batch(
            [
                f"link set {peer} name eth0",
                "link set lo up",
                f"addr add {host.ipv4}/24 dev eth0",
                f"addr add {host.ipv6}/64 dev eth0 nodad",
                "link set eth0 up",
                f"route add default via {self.gateway4}",
                f"route add default via {self.gateway6}",
            ],
            netns=host.netns,
        )
        return host

    def host(self, name: str) -> Host:
        return self.hosts[name]

    def add_routed_site(self, name: str, count: int) -> RoutedSite:
        """``count`` target addresses behind ONE routed hop, like a remote site of a real network.

        A router namespace ``name`` sits on the bridge; behind it a namespace ``<name>f``
        owns whole /24s (198.19.Y.1-250, Y claimed like lab subnets) as local routes on
        ``lo`` (AnyIP): one listener on 0.0.0.0 answers on every address, and the Auditor's
        neighbour table holds one entry (the router), not thousands.
        """
        router = self.add_host(name)
        far = Host(self, name + "f", 0)
        far.netns = f"{self.tag}-{name}f"
        blocks = (count + MAX_ALIASES - 1) // MAX_ALIASES
        with self._alloc_lock():
            claimed: list[int] = []
            for _ in range(blocks + 1):  # +1: the router-to-site link
                claimed.append(self._free_subnet_excluding(set(claimed)))
            self.site_subnets.extend(claimed)
            self._write_state()
        link, *nets = claimed
        far.ipv4 = f"198.18.{link}.2"
        far.ipv6 = f"fd5e:0:{link}::2"
        addresses = [f"198.19.{y}.{k}" for y in nets for k in range(1, MAX_ALIASES + 1)][:count]
        _ip("netns", "add", far.netns)
        far.run(["sysctl", "-q", "-w", "net.ipv4.icmp_ratelimit=0", "net.ipv4.icmp_msgs_per_sec=100000",
                 "net.ipv4.icmp_msgs_burst=100000"], check=False,
                capture_output=True)  # fmt: skip
        router.run(["sysctl", "-q", "-w", "net.ipv4.ip_forward=1", "net.ipv4.icmp_ratelimit=0"],
                   check=True, capture_output=True)  # fmt: skip
        rside, fside = f"{self.tag}r{router.index}", f"{self.tag}f{router.index}"
        _ip("link", "add", rside, "netns", router.netns, "type", "veth", "peer", "name", fside, "netns", far.netns)
        _ip_batch([f"link set {rside} name eth1", f"addr add 198.18.{link}.1/24 dev eth1", "link set eth1 up"]
                  + [f"route add 198.19.{y}.0/24 via 198.18.{link}.2" for y in nets], netns=router.netns)  # fmt: skip
        _ip_batch([f"link set {fside} name eth0", "link set lo up", f"addr add 198.18.{link}.2/24 dev eth0",
                   "link set eth0 up", f"route add default via 198.18.{link}.1"]
                  + [f"route add local 198.19.{y}.0/24 dev lo" for y in nets], netns=far.netns)  # fmt: skip
        _ip_batch([f"route add 198.19.{y}.0/24 via {router.ipv4}" for y in nets]
                  + [f"route add 198.18.{link}.0/24 via {router.ipv4}"])  # fmt: skip
        self._extra_netns.append(far.netns)
        return RoutedSite(router, far, addresses)

    def down(self) -> None:
        """Kill every process the lab started, remove namespaces, veths, bridge, workdir.

        Safe to call twice, and on a lab whose process died (see ``Lab.attach``).
        """
        for proc in self._processes:
            _kill_group(proc)
        self._processes.clear()
        namespaces = [ns for ns in _list_netns() if ns.startswith(self.tag + "-")]
        for ns in namespaces:
            _kill_netns_pids(ns)
        for ns in namespaces:
            _ip("netns", "del", ns, check=False)
        for link in _list_links():
            if link.startswith(self.tag):
                _ip("link", "del", link, check=False)
        with contextlib.suppress(FileNotFoundError):
            (STATE_DIR / f"{self.tag}.json").unlink()
        if self.workdir.exists():
            _unmount_under(self.workdir)
            shutil.rmtree(self.workdir, ignore_errors=True)
        self._up = False

    # -- state -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def _alloc_lock(self) -> Iterator[None]:
        with open(STATE_DIR / "alloc.lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            yield

    def _free_subnet_excluding(self, also: set[int]) -> int:
        """A free subnet number not in ``also`` (call under the allocation lock)."""
        taken = set(also) | {self.subnet}
        for st in _read_states():
            taken.add(int(st.get("subnet", 0)))
            taken.update(int(x) for x in st.get("site_subnets", []))
        addrs = _ip("-4", "-o", "addr", "show").stdout
        routes = _ip("-4", "route", "show").stdout
        for x in range(MAX_SUBNET, 0, -1):  # from the top: lab subnets are taken from the bottom
            if x in taken or f"198.18.{x}." in addrs or f"198.19.{x}." in addrs or f"198.19.{x}." in routes:
                continue
            return x
        raise LabError("no free lab subnet for a routed site (run `python -m tests.lab down`)")

    def _free_subnet(self) -> int:
        taken: set[int] = set()
        for st in _read_states():
            taken.add(int(st.get("subnet", 0)))
            taken.update(int(x) for x in st.get("site_subnets", []))
        addrs = _ip("-4", "-o", "addr", "show").stdout
        for x in range(1, MAX_SUBNET + 1):
            if x in taken:
                continue
            if f" 198.18.{x}." in addrs or f" 198.19.{x}." in addrs:
                continue
            return x
        raise LabError("no free lab subnet in 198.18.1-250.0/24 (run `python -m tests.lab down`)")

    def state(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "tag": self.tag,
            "subnet": self.subnet,
            "owner_pid": os.getpid(),
            "detached": self.detached,
            "workdir": str(self.workdir),
            "hosts": {h.name: {"ipv4": h.ipv4, "ipv6": h.ipv6, "netns": h.netns,
                               "index": h.index} for h in self.hosts.values()},
            "extra": self.extra,
            "site_subnets": self.site_subnets,
            "created": time.time(),
        }  # fmt: skip

    def _write_state(self) -> None:
        path = STATE_DIR / f"{self.tag}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state(), indent=2))
        tmp.replace(path)

    def save(self) -> None:
        """Write the state file (after changing ``extra``)."""
        self._write_state()

    @classmethod
    def attach(cls, state: dict[str, Any]) -> Lab:
        """A Lab object for an existing lab described by a state file (to inspect or down)."""
        lab = cls(state.get("name", "prlab"), detached=bool(state.get("detached")))
        lab.tag = state["tag"]
        lab.subnet = int(state["subnet"])
        lab.bridge = f"{lab.tag}br"
        lab.workdir = Path(state.get("workdir", WORK_ROOT / lab.tag))
        lab.extra = dict(state.get("extra", {}))
        lab.site_subnets = [int(x) for x in state.get("site_subnets", [])]
        for name, h in state.get("hosts", {}).items():
            host = Host(lab, name, int(h["index"]))
            lab.hosts[name] = host
        lab._up = True
        return lab

    @classmethod
    def existing(cls) -> list[dict[str, Any]]:
        """State of every lab on this machine (running or left over)."""
        return _read_states()

    @classmethod
    def reap_stale(cls) -> list[str]:
        """Tear down labs whose owning process died (not detached ones); returns their tags."""
        reaped = []
        for st in _read_states():
            if st.get("detached") or _pid_alive(int(st.get("owner_pid", 0))):
                continue
            cls.attach(st).down()
            reaped.append(st["tag"])
        return reaped


def _read_states() -> list[dict[str, Any]]:
    out = []
    if STATE_DIR.is_dir():
        for path in sorted(STATE_DIR.glob("pr*.json")):
            try:
                out.append(json.loads(path.read_text()))
            except (OSError, ValueError):
                continue
    return out


def _list_netns() -> list[str]:
    out = _ip("netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _list_links() -> list[str]:
    out = _ip("-o", "link", "show", check=False).stdout
    names = []
    for line in out.splitlines():
        parts = line.split(":", 2)
        if len(parts) >= 2:
            names.append(parts[1].strip().split("@")[0])
    return names


def _kill_group(proc: subprocess.Popen[Any], grace: float = 3.0) -> None:
    """SIGTERM the process group (start_new_session) then SIGKILL after ``grace`` seconds."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    except PermissionError:
        proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)


def _kill_netns_pids(netns: str) -> None:
    """Kill, by PID, whatever still runs in one of the lab's own namespaces."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        out = _ip("netns", "pids", netns, check=False).stdout
        pids = [int(p) for p in out.split() if p.isdigit() and int(p) != os.getpid()]
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            if not any(_pid_alive(p) and not _is_zombie(p) for p in pids):
                return
            time.sleep(0.05)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def _unmount_under(path: Path) -> None:
    """Samba runs in private mount namespaces, but unmount anything that leaked here."""
    prefix = str(path.resolve())
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return
    targets = [m.split()[1] for m in mounts if len(m.split()) > 1]
    for target in sorted((t for t in targets if t.startswith(prefix)), reverse=True):
        subprocess.run(["umount", "-l", target], capture_output=True, check=False)
