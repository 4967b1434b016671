"""The one place probes get an NTLM / Kerberos / Negotiate client: pyspnego.

    ctx = client_context(creds, hostname="dc1.corp.example", service="cifs")
    token = ctx.step(server_token)          # until ctx.complete

pyspnego is a client library for Windows authentication (no attack tooling): on
Windows it calls SSPI, elsewhere its own NTLM (and Kerberos when python-gssapi
is installed). With ``Credentials(integrated=True)`` no username or password is
handed over, so SSPI authenticates as the logged-on Windows user (the account
the Auditor's service will run as); on other systems that needs a Kerberos
ticket cache, and without one the error says so.
"""

from __future__ import annotations

import asyncio
import sys
import weakref
from typing import TYPE_CHECKING

from scanner.probes.base import Credentials

if TYPE_CHECKING:
    import spnego

INTEGRATED_NEEDS_WINDOWS = (
    "integrated logon (credentials: {integrated: true}) authenticates as the current Windows user "
    "through SSPI; on this system it needs a Kerberos ticket (kinit) and python-gssapi, or give "
    "username and password_env instead"
)


class AuthSetupError(Exception):
    """The client context could not be created; the message is safe to show (no secret)."""


def account_name(creds: Credentials) -> str:
    """DOMAIN\\user (or user@domain, or user) as pyspnego expects it."""
    user = creds.username
    if creds.domain and "\\" not in user and "@" not in user:
        return f"{creds.domain}\\{user}"
    return user


def client_context(
    creds: Credentials, *, hostname: str, service: str = "host", protocol: str = "negotiate"
) -> spnego.ContextProxy:
    """A pyspnego client context for `service`/`hostname` (the SPN Kerberos asks a ticket for).

    Integrated logon passes no username or password, so SSPI (Windows) uses the
    current logon session; every other account passes its name and password.
    Raises AuthSetupError with words an admin can act on; never with the secret.
    """
    import spnego
    import spnego.exceptions

    if creds.integrated:
        username: str | None = creds.username or None
        password: str | None = None
    else:
        username, password = account_name(creds), creds.password
    try:
        return spnego.client(username, password, hostname=hostname, service=service, protocol=protocol)
    except spnego.exceptions.SpnegoError as exc:
        # pyspnego's messages name the mechanism and the missing piece, never the password
        # (it is not part of any message it builds), but keep only the class name to be sure.
        if creds.integrated and sys.platform != "win32":
            raise AuthSetupError(INTEGRATED_NEEDS_WINDOWS) from None
        raise AuthSetupError(f"the {protocol} client could not start ({type(exc).__name__})") from None
    except (ValueError, TypeError, OSError) as exc:
        raise AuthSetupError(f"the {protocol} client could not start ({type(exc).__name__})") from None


def local_failure(creds: Credentials, exc: BaseException, protocol: str = "negotiate") -> str:
    """Words for a client that failed before sending anything (no credential to use here)."""
    if creds.integrated and sys.platform != "win32":
        return INTEGRATED_NEEDS_WINDOWS
    return f"the {protocol} client found no usable credential on this host ({type(exc).__name__})"


# Accounts a server rejected during this run, per event loop (one loop = one run), so a
# wrong password in the inventory costs one bad-password count per run, not one per
# target: enough rejected logons in a row lock the account out (domain lockout policy).
_REJECTED: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[Credentials, str]] = weakref.WeakKeyDictionary()


def note_rejected(creds: Credentials, where: str) -> None:
    """Remember that `where` rejected this account (integrated logons are never locked out by us)."""
    if not creds.integrated:
        _REJECTED.setdefault(asyncio.get_running_loop(), {}).setdefault(creds, where)


def rejected_before(creds: Credentials) -> str | None:
    """Where this run already saw the account rejected, or None."""
    return _REJECTED.get(asyncio.get_running_loop(), {}).get(creds)
