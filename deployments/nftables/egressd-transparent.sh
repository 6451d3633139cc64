#!/bin/sh
# egressd-transparent start|stop|check: the in-line gateway's packet rules.
# Installed as /usr/lib/egressd/transparent-rules and run by
# egressd-transparent.service (ordered before egressd.service).
#
# start: checks the settings, loads egressd-transparent.nft with them (one
# transaction, replacing an earlier load), adds tproxy's policy routing for
# the families that use it, and turns on forwarding only for a family with
# DNS resolvers to route to (nothing else is ever forwarded).
# stop: forwarding off first, then the rules and routes go: a stopped
# gateway drops what clients send through it instead of routing it.
# check: validates the settings and the ruleset (nft -c); changes nothing.
#
# Settings (environment, from /etc/default/egressd-transparent); lists are
# separated by spaces or commas:
#   EGRESSD_CLIENT_CIDRS      client subnets (IPv4 and IPv6 prefixes); required
#   EGRESSD_TRANSPARENT_PORT  egressd's listen.transparent port (default 3130)
#   EGRESSD_REDIRECT_PORTS    TCP ports handed to egressd (default 80 443)
#   EGRESSD_IPV4_MODE         redirect (default), tproxy or off
#   EGRESSD_IPV6_MODE         redirect (default), tproxy or off
#   EGRESSD_DNS_RESOLVERS     addresses DNS may be routed to (default none)
#   EGRESSD_TPROXY_MARK       packet mark for tproxy (default 0x1)
#   EGRESSD_TPROXY_TABLE      routing table for tproxy (default 100)
#   EGRESSD_TRANSPARENT_RULESET  the ruleset (default
#                             /usr/share/egressd/egressd-transparent.nft)
set -eu

ruleset=${EGRESSD_TRANSPARENT_RULESET:-/usr/share/egressd/egressd-transparent.nft}
port=${EGRESSD_TRANSPARENT_PORT:-3130}
redirect_ports=${EGRESSD_REDIRECT_PORTS:-80 443}
ipv4_mode=${EGRESSD_IPV4_MODE:-redirect}
ipv6_mode=${EGRESSD_IPV6_MODE:-redirect}
resolvers=${EGRESSD_DNS_RESOLVERS:-}
mark=${EGRESSD_TPROXY_MARK:-0x1}
table=${EGRESSD_TPROXY_TABLE:-100}

log() {
	echo "egressd-transparent: $*"
}

fail() {
	echo "egressd-transparent: $*" >&2
	exit 1
}

words() {
	printf '%s\n' "$1" | tr ',' ' '
}

# nft_set WORD...: the words as an nft set, "{ }" for none.
nft_set() {
	out=
	for w in "$@"; do
		out="${out:+$out, }$w"
	done
	echo "{ $out }"
}

is_port() {
	case $1 in
	'' | *[!0-9]* | 0*) return 1 ;;
	esac
	[ "$1" -le 65535 ]
}

# Settings, checked before anything is changed.
cidrs4= cidrs6=
for c in $(words "${EGRESSD_CLIENT_CIDRS:-}"); do
	case $c in
	*[!0-9a-fA-F:./]* | */*/* | */ | /*) fail "EGRESSD_CLIENT_CIDRS: $c is not a prefix" ;;
	*/*) ;;
	*) fail "EGRESSD_CLIENT_CIDRS: $c has no prefix length" ;;
	esac
	case ${c#*/} in
	'' | *[!0-9]*) fail "EGRESSD_CLIENT_CIDRS: $c is not a prefix" ;;
	esac
	if [ "${c#*/}" -eq 0 ]; then
		fail "EGRESSD_CLIENT_CIDRS: $c is the whole address space; list the client subnets only"
	fi
	case $c in
	*:*) cidrs6="$cidrs6 $c" ;;
	*) cidrs4="$cidrs4 $c" ;;
	esac
done
[ -n "$cidrs4$cidrs6" ] || fail "EGRESSD_CLIENT_CIDRS is empty: set the client subnets whose routes point at this gateway"

is_port "$port" || fail "EGRESSD_TRANSPARENT_PORT: $port is not a port (1-65535)"
ports=
for p in $(words "$redirect_ports"); do
	is_port "$p" || fail "EGRESSD_REDIRECT_PORTS: $p is not a port (1-65535)"
	ports="$ports $p"
done
[ -n "$ports" ] || fail "EGRESSD_REDIRECT_PORTS is empty"

redirect_families= tproxy_families=
for fam in ipv4 ipv6; do
	if [ $fam = ipv4 ]; then mode=$ipv4_mode; else mode=$ipv6_mode; fi
	case $mode in
	redirect) redirect_families="$redirect_families $fam" ;;
	tproxy) tproxy_families="$tproxy_families $fam" ;;
	off) ;;
	*) fail "EGRESSD_$(echo $fam | tr a-z A-Z)_MODE: $mode is not redirect, tproxy or off" ;;
	esac
done

resolvers4= resolvers6=
for r in $(words "$resolvers"); do
	case $r in
	*[!0-9a-fA-F:.]* | '') fail "EGRESSD_DNS_RESOLVERS: $r is not an address" ;;
	*:*) resolvers6="$resolvers6 $r" ;;
	*) resolvers4="$resolvers4 $r" ;;
	esac
done

case $mark in
0x* | [1-9]*) ;;
*) fail "EGRESSD_TPROXY_MARK: $mark is not a non-zero number" ;;
esac
case $table in
'' | *[!0-9]*) fail "EGRESSD_TPROXY_TABLE: $table is not a table number" ;;
esac

# shellcheck disable=SC2086 # word lists
nft_load() {
	nft "$@" \
		-D "client_cidrs4=$(nft_set $cidrs4)" \
		-D "client_cidrs6=$(nft_set $cidrs6)" \
		-D "redirect_ports=$(nft_set $ports)" \
		-D "transparent_port=$port" \
		-D "redirect_families=$(nft_set $redirect_families)" \
		-D "tproxy_families=$(nft_set $tproxy_families)" \
		-D "tproxy_mark=$mark" \
		-D "dns_resolvers4=$(nft_set $resolvers4)" \
		-D "dns_resolvers6=$(nft_set $resolvers6)" \
		-f "$ruleset"
}

# forwarding FAMILY 0|1
forwarding() {
	if [ "$1" = ipv4 ]; then
		echo "$2" >/proc/sys/net/ipv4/ip_forward
		return
	fi
	if [ "$2" = 1 ]; then
		# A router ignores router advertisements unless accept_ra is 2; the
		# instance's own IPv6 default route comes from them.
		for f in /proc/sys/net/ipv6/conf/*/accept_ra; do
			[ "$(cat "$f")" = 0 ] || echo 2 >"$f"
		done
	fi
	echo "$2" >/proc/sys/net/ipv6/conf/all/forwarding
}

# tproxy_routes add|del FAMILY: marked packets are delivered locally.
tproxy_routes() {
	if [ "$2" = ipv4 ]; then f=-4 any=0.0.0.0/0; else f=-6 any=::/0; fi
	while ip $f rule del fwmark "$mark" lookup "$table" 2>/dev/null; do :; done
	ip $f route flush table "$table" 2>/dev/null || true
	if [ "$1" = add ]; then
		ip $f rule add fwmark "$mark" lookup "$table"
		ip $f route add local $any dev lo table "$table"
	fi
}

start() {
	nft_load
	for fam in ipv4 ipv6; do
		case " $tproxy_families " in
		*" $fam "*) tproxy_routes add $fam ;;
		*) tproxy_routes del $fam ;;
		esac
	done
	if [ -n "$resolvers4" ]; then forwarding ipv4 1; else forwarding ipv4 0; fi
	if [ -n "$resolvers6" ]; then forwarding ipv6 1; else forwarding ipv6 0; fi
	dns="$resolvers4$resolvers6"
	log "TCP ports$ports from$cidrs4$cidrs6 go to port $port (redirect:${redirect_families:- none}; tproxy:${tproxy_families:- none}); DNS routed to:${dns:- none}; nothing else is forwarded"
}

stop() {
	forwarding ipv4 0
	forwarding ipv6 0
	tproxy_routes del ipv4
	tproxy_routes del ipv6
	nft delete table inet egressd_transparent 2>/dev/null || true
	log "stopped: nothing is redirected or forwarded"
}

case ${1:-} in
start) start ;;
stop) stop ;;
check) nft_load -c && log "settings and $ruleset are valid" ;;
*)
	echo "usage: egressd-transparent start|stop|check" >&2
	exit 2
	;;
esac
