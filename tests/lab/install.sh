#!/bin/sh
# Install what the portready lab needs on Debian (bookworm or later). Idempotent:
# packages already present are left alone. Run as root.
#
#   bash tests/lab/install.sh            the lab, the demo and the test suite
#   bash tests/lab/install.sh --browser  also chromium (356 MB), used only by
#                                        tests/reports/test_html_browser.py; .ci/run passes it
set -eu

BROWSER=0
for arg in "$@"; do
    case "$arg" in
        --browser) BROWSER=1 ;;
        *) echo "install.sh: unknown option $arg (known: --browser)" >&2; exit 2 ;;
    esac
done

if [ "$(id -u)" -ne 0 ]; then
    echo "install.sh: run as root" >&2
    exit 1
fi

# libkrb5-dev: headers for pip's gssapi/krb5 (portready[kerberos]), so the LDAP tests can
# bind with Kerberos from Linux as Windows does through SSPI.
# samba-ad-provision is a Recommends of samba-ad-dc: name it, or provisioning fails under
# --no-install-recommends. bind9-dnsutils gives dig for checking the DC by hand.
# libkrb5-dev and gcc build python-gssapi and krb5 (the test extra's pyspnego[kerberos]).
PACKAGES="
samba samba-ad-dc samba-ad-provision samba-dsdb-modules samba-vfs-modules winbind
krb5-user smbclient ldap-utils python3-samba
iproute2 nftables util-linux bsdutils procps
openssl ca-certificates nginx-light
nmap tcpdump bind9-dnsutils iputils-ping
python3 python3-venv
libkrb5-dev gcc libcap2-bin
"
# The browser tests only: the HTML report rendered headless.
BROWSER_PACKAGES="chromium"
if [ "$BROWSER" -eq 1 ]; then
    PACKAGES="$PACKAGES $BROWSER_PACKAGES"
fi

missing=""
for pkg in $PACKAGES; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $pkg"
    fi
done

if [ -n "$missing" ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    # shellcheck disable=SC2086
    apt-get install -y -q --no-install-recommends $missing
fi

# Daemons the samba package may have started in the root namespace do not disturb the
# lab: its DCs listen only inside their own namespaces.
mkdir -p /run/samba /var/lib/samba /var/log/samba /var/cache/samba /run/portready-lab

echo "lab dependencies installed"
