"""A real Active Directory domain controller (Samba) inside a lab host's namespace.

Provisioning takes seconds, so it happens once per Samba version into a cache folder
(``provision_template``); every DC then starts from a copy of that template::

    template = provision_template()              # cached in /var/tmp/portready-lab-cache
    dc = SambaDC(lab.add_host("dc1"), template)
    dc.start()                                   # LDAP, GC, LDAPS, Kerberos, DNS, SMB, EPM...
    dc.address, dc.realm, dc.admin_user          # dc.admin_password: never print it
    dc.stop()

How it is kept inside the lab:

* ``samba-tool domain provision -s /dev/null`` so the machine's smb.conf is not copied in;
  the ``dns forwarder`` it copies from /etc/resolv.conf is removed (no outside network).
* Provisioning and every start run under ``unshare --mount --uts --propagation private`` with
  the DC's own folders bind-mounted over /var/lib/samba, /run/samba, /var/log/samba and
  /var/cache/samba: smbd's winbind client uses the compiled-in /run/samba/winbindd socket
  whatever the config says, and the paths inside the template stay valid for every copy.
* The template is provisioned for placeholder addresses; before each start the DNS A/AAAA
  records naming the placeholders are rewritten offline (Samba's python bindings on
  sam.ldb) to the DC's real lab addresses, so ``dc1.lab.test`` resolves to the DC.
* ``interfaces = lo eth0`` + ``bind interfaces only``: every lab namespace has ``eth0``, so
  the template needs no address.
* ``ldap server require strong auth`` stays at its default (yes): simple binds on 389 are
  refused with strongerAuthRequired, as on hardened Windows DCs. ``SambaDC(..., conf={...})``
  sets [global] options for one DC (e.g. ``{"ldap server require strong auth": "no"}``) in
  its own copy of the template.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:
    from tests.lab.netns import Host

CACHE_DIR = Path(os.environ.get("PORTREADY_LAB_CACHE", "/var/tmp/portready-lab-cache"))
TEMPLATE_FORMAT = 2  # bump when the template layout or smb.conf changes
REALM = "LAB.TEST"
DOMAIN = "LAB"
DC_HOSTNAME = "dc1"
PLACEHOLDER4 = "198.18.255.254"
PLACEHOLDER6 = "fd5e:0:ffff::fffe"
SAMBA_DIRS = ("/var/lib/samba", "/run/samba", "/var/log/samba", "/var/cache/samba")
# The ports start() waits for (TCP); the others (636, 3268, 3269, 464, 139, UDP) come from
# the same processes and are checked by tests/lab/test_lab.py.
READY_PORTS = (389, 445, 88, 53, 135)
SYSTEM_PYTHON = "/usr/bin/python3"  # Samba's python bindings live in Debian's python

SMB_CONF_EXTRA = """\
\tinterfaces = lo eth0
\tbind interfaces only = yes
\ttls enabled = yes
\t# no samba_dnsupdate/spn update at start: the records are fixed offline before start
\tdns update command = /bin/true
\tspn update command = /bin/true
\t# the lab has no outside network and no printers
\tload printers = no
\tprinting = bsd
\tprintcap name = /dev/null
\tdisable spoolss = yes
"""

# Rewrites the placeholder A/AAAA records to the DC's real addresses; runs with Debian's
# python (Samba bindings) inside the DC's mount namespace, before samba starts.
_FIX_DNS = r"""
import sys, ipaddress, ldb
from samba.samdb import SamDB
from samba.auth import system_session
from samba.param import LoadParm
from samba.ndr import ndr_unpack, ndr_pack
from samba.dcerpc import dnsp
conf, old4, new4, old6, new6 = sys.argv[1:6]
lp = LoadParm(); lp.load(conf)
db = SamDB(url=lp.samdb_url(), session_info=system_session(), lp=lp)
base = str(db.get_default_basedn())
old6 = ipaddress.ip_address(old6)
changed = 0
for part in ("DC=DomainDnsZones,", "DC=ForestDnsZones,"):
    for msg in db.search(base=part + base, scope=ldb.SCOPE_SUBTREE,
                         expression="(objectClass=dnsNode)", attrs=["dnsRecord"]):
        if "dnsRecord" not in msg:
            continue
        recs = [ndr_unpack(dnsp.DnssrvRpcRecord, bytes(v)) for v in msg["dnsRecord"]]
        dirty = False
        for r in recs:
            if r.wType == dnsp.DNS_TYPE_A and r.data == old4:
                r.data = new4; dirty = True
            elif r.wType == dnsp.DNS_TYPE_AAAA and ipaddress.ip_address(r.data) == old6:
                r.data = new6; dirty = True
        if dirty:
            m = ldb.Message(msg.dn)
            m["dnsRecord"] = ldb.MessageElement([ndr_pack(r) for r in recs],
                                                ldb.FLAG_MOD_REPLACE, "dnsRecord")
            db.modify(m)
            changed += 1
print("dns records rewritten:", changed)
"""


class SambaError(RuntimeError):
    """Provisioning or starting the DC failed (message carries the log tail, no secrets)."""


def samba_version() -> str:
    """``samba --version`` as a folder-safe key, e.g. ``4.17.12-Debian``."""
    out = subprocess.run(["samba", "--version"], capture_output=True, text=True, check=True)
    return re.sub(r"[^A-Za-z0-9.+_-]", "_", out.stdout.strip().removeprefix("Version "))


def samba_available() -> str | None:
    """Why a DC cannot run here, or None (missing packages: run tests/lab/install.sh)."""
    for tool in ("samba", "samba-tool", "unshare"):
        if shutil.which(tool) is None:
            return f"`{tool}` is missing (run tests/lab/install.sh)"
    if not Path(SYSTEM_PYTHON).exists():
        return f"{SYSTEM_PYTHON} (Debian's python with Samba bindings) is missing"
    if not Path("/usr/share/samba/setup").is_dir():
        return "samba-ad-provision is missing (run tests/lab/install.sh)"
    return None


def _mount_script(folders: dict[str, Path]) -> str:
    lines = ["set -e"]
    for target, source in folders.items():
        lines.append(f"mkdir -p {target} && mount --bind {source} {target}")
    lines.append(f"hostname {DC_HOSTNAME}")
    return "\n".join(lines)


def _isolated_argv(folders: dict[str, Path], command: str) -> list[str]:
    """sh under a private mount + UTS namespace with the Samba folders bind-mounted."""
    script = _mount_script(folders) + "\n" + command
    return ["unshare", "--mount", "--uts", "--propagation", "private", "sh", "-c", script]


def _fresh_folders(root: Path) -> dict[str, Path]:
    """root/{lib,run,log,cache}, to be mounted over the four Samba folders."""
    named = dict(zip(SAMBA_DIRS, ("lib", "run", "log", "cache"), strict=True))
    folders = {target: root / name for target, name in named.items()}
    for path in folders.values():
        path.mkdir(parents=True, exist_ok=True)
    return folders


def provision_template(cache_dir: Path | None = None) -> Path:
    """A provisioned LAB.TEST domain, made once per Samba version and reused.

    Returns the template folder (``lib/`` is the future /var/lib/samba; ``admin-password``
    holds the administrator password, mode 0600). Several sessions at once are safe: the
    first provisions under a lock, the others wait and reuse.
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else CACHE_DIR
    reason = samba_available()
    if reason:
        raise SambaError(reason)
    cache_dir.mkdir(parents=True, exist_ok=True)
    template = cache_dir / f"samba-{samba_version()}-t{TEMPLATE_FORMAT}"
    if (template / ".complete").exists():
        return template
    with open(cache_dir / ".provision.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (template / ".complete").exists():
            return template
        work = cache_dir / f".provision-{os.getpid()}"
        shutil.rmtree(work, ignore_errors=True)
        folders = _fresh_folders(work)
        password = "Lab-" + secrets.token_urlsafe(12) + "-9a"
        pw_file = work / "admin-password"
        pw_file.touch(mode=0o600)
        pw_file.write_text(password)
        # The password reaches samba-tool through a file read by the shell, so it is never
        # part of a command line we log or of an exception message.
        command = (
            "samba-tool domain provision -s /dev/null --targetdir=/var/lib/samba "
            f"--realm={REALM} --domain={DOMAIN} --server-role=dc "
            "--dns-backend=SAMBA_INTERNAL --use-rfc2307 "
            f"--host-name={DC_HOSTNAME} --host-ip={PLACEHOLDER4} --host-ip6={PLACEHOLDER6} "
            f'--adminpass="$(cat {pw_file})"\n'
        )
        # A cached template outlives the default 42-day password age: never expire.
        command += (
            "samba-tool domain passwordsettings set --max-pwd-age=0 "
            "-H /var/lib/samba/private/sam.ldb >/dev/null\n"
            "samba-tool user setexpiry Administrator --noexpiry "
            "-H /var/lib/samba/private/sam.ldb >/dev/null\n"
        )
        started = time.monotonic()
        proc = subprocess.run(
            _isolated_argv(folders, command),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-15:])
            shutil.rmtree(work, ignore_errors=True)
            raise SambaError(f"samba-tool domain provision failed:\n{tail.replace(password, '***')}")
        conf = folders["/var/lib/samba"] / "etc" / "smb.conf"
        text = conf.read_text()
        text = re.sub(r"^\s*dns forwarder\s*=.*\n", "", text, flags=re.MULTILINE)
        text = text.replace("[global]\n", "[global]\n" + SMB_CONF_EXTRA, 1)
        conf.write_text(text)
        # Runtime leftovers of the provision (sockets, caches) are not part of a template.
        lib = folders["/var/lib/samba"]
        for name in ("msg.sock", "msg.lock"):
            shutil.rmtree(lib / name, ignore_errors=True)
        for name in ("gencache.tdb", "names.tdb"):
            with contextlib.suppress(FileNotFoundError):
                (lib / name).unlink()
        for transient in ("run", "log", "cache"):
            shutil.rmtree(work / transient, ignore_errors=True)
        (work / "provision-seconds").write_text(f"{time.monotonic() - started:.2f}\n")
        (work / ".complete").write_text(samba_version() + "\n")
        shutil.rmtree(template, ignore_errors=True)
        work.rename(template)
        for old in cache_dir.glob("samba-*-t*"):
            if old != template:  # templates of other Samba versions or layouts
                shutil.rmtree(old, ignore_errors=True)
    return template


class SambaDC:
    """One running Samba AD DC on a lab host (see the module docstring)."""

    realm = REALM
    domain = DOMAIN
    admin_user = "Administrator"

    def __init__(
        self,
        host: Host,
        template: Path,
        max_runtime: int = 3 * 3600,
        conf: Mapping[str, str] | None = None,
        spns: tuple[str, ...] = (),
    ) -> None:
        self.host = host
        # smb.conf [global] settings of this DC only, e.g. {"ldap server require strong auth":
        # "no"}; written into its copy of the template at start (the template is untouched).
        self.conf = dict(conf or {})
        # Service principals a Windows DC registers itself (samba_spnupdate is off in the lab),
        # e.g. ("ldap/dc1.lab.test",) so clients bind with Kerberos by host name. Opt-in per DC.
        self.spns: tuple[str, ...] = tuple(spns)
        self.template = Path(template)
        self.hostname = DC_HOSTNAME
        self.fqdn = f"{DC_HOSTNAME}.{REALM.lower()}"
        self.address = host.ipv4
        self.address6 = host.ipv6
        self.max_runtime = max_runtime  # samba exits by itself after this (leak safety net)
        self.root = host.lab.workdir / f"dc-{host.name}"
        self.krb5_conf = self.root / "krb5.conf"
        self.log_path = self.root / "samba.out"
        self.process: subprocess.Popen[Any] | None = None
        self.start_seconds: float | None = None

    def __repr__(self) -> str:
        return f"SambaDC({self.fqdn!r}, address={self.address!r})"

    @property
    def admin_password(self) -> str:
        """The administrator password of the test domain; never print or log it."""
        return self.password_from_template(self.template)

    @staticmethod
    def password_from_template(template: Path | str) -> str:
        return (Path(template) / "admin-password").read_text().strip()

    @property
    def base_dn(self) -> str:
        return ",".join(f"DC={p}" for p in self.realm.lower().split("."))

    def env(self) -> dict[str, str]:
        """Environment for kinit/smbclient/ldapsearch against this DC (own krb5.conf/ccache)."""
        env = dict(os.environ)
        env["KRB5_CONFIG"] = str(self.krb5_conf)
        env["KRB5CCNAME"] = f"FILE:{self.root / 'krb5cc'}"
        return env

    def start(self, timeout: float = 60.0) -> SambaDC:
        """Copy the template, fix DNS, start ``samba -F`` and wait until the ports answer."""
        if self.process is not None and self.process.poll() is None:
            return self
        started = time.monotonic()
        if self.root.exists():
            shutil.rmtree(self.root)
        folders = _fresh_folders(self.root)
        lib = folders["/var/lib/samba"]
        lib.rmdir()
        subprocess.run(["cp", "-a", "--reflink=auto", str(self.template / "lib"), str(lib)], check=True)
        if self.conf:
            _set_global(lib / "etc" / "smb.conf", self.conf)
        fixer = self.root / "fix_dns.py"
        fixer.write_text(_FIX_DNS)
        self._write_krb5_conf()
        command = (
            f"{SYSTEM_PYTHON} {fixer} /var/lib/samba/etc/smb.conf "
            f"{PLACEHOLDER4} {self.address} {PLACEHOLDER6} {self.address6}\n"
            + self._spn_commands()
            + "exec samba --foreground --no-process-group --debug-stdout --debuglevel=1 "
            f"--maximum-runtime={int(self.max_runtime)} -s /var/lib/samba/etc/smb.conf"
        )
        log = open(self.log_path, "wb")  # noqa: SIM115 - handed to the child
        try:
            self.process = self.host.popen(
                _isolated_argv(folders, command),
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        pending = list(READY_PORTS)
        while pending:
            if self.process.poll() is not None:
                raise SambaError(f"samba exited with {self.process.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise SambaError(
                    f"samba on {self.address} not ready after {timeout:.0f}s "
                    f"(ports {pending} silent):\n{self.log_tail()}"
                )
            pending = [p for p in pending if not _tcp_open(self.address, p)]
            if pending:
                time.sleep(0.1)
        self.start_seconds = time.monotonic() - started
        return self

    def _spn_commands(self) -> str:
        """Shell lines adding self.spns to the DC's account, offline, before samba starts."""
        for spn in self.spns:
            if not re.fullmatch(r"[A-Za-z]+/[A-Za-z0-9.-]+", spn):
                raise ValueError(f"not a service principal name: {spn!r}")
        sam = "/var/lib/samba/private/sam.ldb"
        return "".join(f"samba-tool spn add {spn} '{DC_HOSTNAME.upper()}$' -H {sam} >/dev/null\n" for spn in self.spns)

    def stop(self) -> None:
        """SIGTERM samba's process group (by PID), SIGKILL after a grace period."""
        from tests.lab.netns import _kill_group

        if self.process is not None:
            _kill_group(self.process, grace=5.0)
            with contextlib.suppress(ValueError):
                self.host.lab._processes.remove(self.process)
            self.process = None

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 25) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:]).replace(self.admin_password, "***")

    def memory_bytes(self) -> int:
        """Proportional set size of every process in the DC's namespace (psutil)."""
        import psutil

        out = subprocess.run(
            ["ip", "netns", "pids", self.host.netns], capture_output=True, text=True, check=False
        ).stdout
        total = 0
        for pid in (int(p) for p in out.split() if p.isdigit()):
            with contextlib.suppress(psutil.Error):
                mem = psutil.Process(pid).memory_full_info()
                total += getattr(mem, "pss", mem.rss)
        return total

    def kinit(self) -> subprocess.CompletedProcess[str]:
        """kinit Administrator@LAB.TEST into the DC's own ccache (password on stdin)."""
        return subprocess.run(
            ["kinit", f"{self.admin_user}@{self.realm}"],
            input=self.admin_password + "\n", capture_output=True, text=True,
            env=self.env(), timeout=30, check=False,
        )  # fmt: skip

    def _write_krb5_conf(self) -> None:
        kdc = self.address
        self.krb5_conf.write_text(
            "[libdefaults]\n"
            f"  default_realm = {self.realm}\n"
            "  dns_lookup_realm = false\n  dns_lookup_kdc = false\n  rdns = false\n"
            "  udp_preference_limit = 0\n"
            "[realms]\n"
            f"  {self.realm} = {{\n    kdc = {kdc}\n    admin_server = {kdc}\n  }}\n"
            "[domain_realm]\n"
            f"  .{self.realm.lower()} = {self.realm}\n  {self.realm.lower()} = {self.realm}\n"
        )


def _set_global(path: Path, settings: Mapping[str, str]) -> None:
    """Set `settings` in smb.conf's [global] section (replacing a line already there)."""
    text = path.read_text()
    for key, value in settings.items():
        if not re.fullmatch(r"[a-z0-9 :_]+", key) or "\n" in value:
            raise ValueError(f"not an smb.conf setting: {key!r}")
        line = f"\t{key} = {value}\n"
        pattern = re.compile(rf"^\s*{re.escape(key)}\s*=.*\n", re.MULTILINE)
        text = pattern.sub(line, text, count=1) if pattern.search(text) else text.replace("[global]\n", "[global]\n" + line, 1)
    path.write_text(text)


def _tcp_open(address: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False
