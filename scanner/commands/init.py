"""`portready init`: write a commented example inventory."""

from __future__ import annotations

import argparse
from pathlib import Path

from scanner.errors import UsageError

EXAMPLE = """\
# portready inventory: who is on the other end of each documented row.
# Roles are listed by `portready profiles --roles`. A host may be a name, an
# address, a CIDR block (10.0.6.0/28), a range (10.0.5.10-40 or
# 10.0.5.10-10.0.5.40), {file: hosts.txt} (one host a line, # comments) or
# {host: NAME, label: "shown in reports"}.

targets:
  domain-controllers:
    - dc1.corp.example
    # - 10.0.5.10-12
  dns-servers:
    - dc1.corp.example
  # monitored-computers:
  #   - {file: monitored-computers.txt}
  # exchange-servers: [exch1.corp.example]
  # sql-servers: [sql1.corp.example]
  # vmware-servers: [vcenter.corp.example]
  # isilon-clusters: [isilon-mgmt.corp.example]
  # oracle-servers: [ora1.corp.example]
  # meraki-dashboard: [api.meraki.com]
  # Microsoft 365 rows check the host names the vendor documents unless you
  # list others (tenant names, sovereign clouds):
  # exchange-online-endpoints: [outlook.office365.com]

# Find domain controllers through DNS instead of listing them:
# discover:
#   - {domain: corp.example, dns_server: 10.0.0.53}

settings:
  domain: corp.example          # used by the LDAP ping, Kerberos realm and DNS SRV checks
  timeout: 3                    # seconds to wait for one answer (upper bound; adapts down)
  retries: 1
  # concurrency: 256
  # depth: protocol             # or port (reachability only)
  # ca_bundle: corp-root-ca.pem # trust your enterprise CA for LDAPS/HTTPS checks
  # proxy: http://proxy.corp.example:3128   # for Microsoft 365 and partner-portal rows
  ports:
    # Ports that each installation chooses:
    # sharepoint-central-admin-port: 2013
    nutanix-port: 9898
  # oracle_service: ORCL
  # sql_instances: {SQLEXPRESS: 50123}   # when the SQL Browser is off

# Optional accounts for authenticated checks (LDAP bind, SMB session).
# Passwords never go in this file: name an environment variable or ask.
# credentials:
#   domain-controllers:
#     username: svc-auditor
#     domain: CORP
#     password_env: PORTREADY_DC_PASSWORD
#     # password_prompt: true

# Profiles to run when --profile is not given (default: every profile that has targets):
# profiles: [active-directory, group-policy]
"""


def _run(args: argparse.Namespace) -> int:
    path: Path = args.path
    if str(path) == "-":
        print(EXAMPLE, end="")
        return 0
    if path.exists() and not args.force:
        raise UsageError(f"{path} exists; use --force to overwrite it")
    path.write_text(EXAMPLE, encoding="utf-8")
    print(f"wrote {path}: edit the targets, then `portready plan -i {path}` and `portready scan -i {path}`")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "init", help="write a commented example inventory",
        description=(
            "Write an example inventory (targets per role, settings, credential references) with a comment on "
            "every key, to edit and then use with `portready plan -i FILE` and `portready scan -i FILE`."
        ),
    )  # fmt: skip
    p.add_argument("path", nargs="?", type=Path, default=Path("portready-inventory.yaml"), help="file to write (- for stdout)")
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    p.set_defaults(func=_run)
