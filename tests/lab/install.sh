#!/bin/sh
# Install everything the portready lab needs on Debian (bookworm or later). Idempotent:
# packages already present are left alone. Run as root; .ci/run calls it.
set -eu

if [ "$(id -u)" -ne 0 ]; then
    echo "install.sh: run as root" >&2
    exit 1
fi

# samba-ad-provision is a Recommends of samba-ad-dc: name it, or provisioning fails under
# --no-install-recommends. bind9-dnsutils gives dig for checking the DC by hand.
PACKAGES="
samba samba-ad-dc samba-ad-provision samba-dsdb-modules samba-vfs-modules winbind
krb5-user smbclient ldap-utils python3-samba
iproute2 nftables util-linux bsdutils procps
openssl ca-certificates nginx-light
nmap chromium tcpdump bind9-dnsutils iputils-ping
python3 python3-venv
libcap2-bin
"

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
