#!/usr/bin/env bash
# Installs the tools egressd's tests need on a Debian machine: curl (the
# real client of the end-to-end tests), iproute2 (`ip netns` for the
# namespace tests), haproxy (the farm's load balancer), logrotate (the
# packaged access-log rotation), nftables (the in-line gateway's ruleset,
# loaded by the tests inside namespaces of their own), promtool (Debian's
# prometheus package: the alert rules), systemd-analyze (verifies the
# units), chromium (the headless browser that drives the status page test),
# c-icap with its content-filtering module (the real ICAP service of the DLP
# tests), squid (a real parent proxy for the upstream_proxies tests) and
# openssl (its test password hash). Safe to run repeatedly; does nothing
# when all exist.
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
# promtool checks and unit-tests deployments/prometheus/egressd.rules.yaml.
# Debian ships it only in the prometheus package, whose server is kept from
# starting (it would take port 9090, egressd's default admin port).
need_promtool=0
command -v promtool >/dev/null 2>&1 || { missing+=(prometheus); need_promtool=1; }
# systemd-analyze verify checks deployments/systemd's units (nothing is started).
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
# Debian's chromium (/usr/bin/chromium), run headless by test/status_page_test.go.
[ -x /usr/bin/chromium ] || missing+=(chromium)
# c-icap is the real ICAP service of the DLP tests (run by the tests on
# loopback with a generated config; the Debian service is not used).
command -v c-icap >/dev/null 2>&1 || missing+=(c-icap)
compgen -G '/usr/lib/*/c_icap/srv_content_filtering.so' >/dev/null || missing+=(libc-icap-mod-contentfiltering)
# Squid is the real parent proxy of the upstream-proxy tests, run by the
# tests as a child process on a port of its own; its service is kept from
# starting like prometheus's.
need_squid=0
command -v squid >/dev/null 2>&1 || [ -x /usr/sbin/squid ] || { missing+=(squid); need_squid=1; }
command -v openssl >/dev/null 2>&1 || missing+=(openssl)

if [ "${#missing[@]}" -eq 0 ]; then
	exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
	SUDO="sudo"
fi
echo "setup: installing ${missing[*]}" >&2
$SUDO apt-get update
if { [ "$need_promtool" -eq 1 ] || [ "$need_squid" -eq 1 ]; } && [ ! -e /usr/sbin/policy-rc.d ]; then
	# policy-rc.d exit 101: invoke-rc.d starts no service during the install.
	printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
	$SUDO chmod 0755 /usr/sbin/policy-rc.d
	trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
fi
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "${missing[@]}"
if [ "$need_promtool" -eq 1 ] && command -v systemctl >/dev/null 2>&1; then
	$SUDO systemctl disable --now prometheus >/dev/null 2>&1 || true
fi
if [ "$need_squid" -eq 1 ] && command -v systemctl >/dev/null 2>&1; then
	$SUDO systemctl disable --now squid >/dev/null 2>&1 || true
fi
