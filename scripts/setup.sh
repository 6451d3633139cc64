#!/usr/bin/env bash
# Installs the tools egressd's tests need on a Debian machine: curl (the
# real client of the end-to-end tests), iproute2 (`ip netns` for the
# namespace tests), haproxy (the farm's load balancer) and logrotate (the
# packaged access-log rotation) and nftables (the in-line gateway's ruleset,
# loaded by the tests inside namespaces of their own). Safe to run
# repeatedly; does nothing when all exist.
set -euo pipefail

missing=()
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v ip >/dev/null 2>&1 || [ -x /usr/sbin/ip ] || [ -x /sbin/ip ] || missing+=(iproute2)
command -v update-ca-certificates >/dev/null 2>&1 || missing+=(ca-certificates)
# HAProxy is the real load balancer of the farm and PROXY-protocol tests. It
# is run by the tests as a child process; the Debian service is not used.
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
# logrotate runs the packaged /etc/logrotate.d/egressd against a test egressd.
command -v logrotate >/dev/null 2>&1 || [ -x /usr/sbin/logrotate ] || missing+=(logrotate)
# nft checks and loads deployments/nftables/egressd-transparent.nft.
command -v nft >/dev/null 2>&1 || [ -x /usr/sbin/nft ] || missing+=(nftables)

if [ "${#missing[@]}" -eq 0 ]; then
	exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
	SUDO="sudo"
fi
echo "setup: installing ${missing[*]}" >&2
$SUDO apt-get update
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "${missing[@]}"
