#!/bin/sh
# Local egressd farm: N egressd instances behind HAProxy in TCP mode on
# loopback, health-checked on /readyz the way the AWS NLB checks them.
#
# Usage: scripts/farm.sh [-n instances] [-p] [-b binary] [-c config] [-P base-port] [-k]
#   -n  number of egressd instances (default 3)
#   -p  HAProxy sends PROXY v2 headers; egressd runs with listen.proxy_protocol
#       and trusts 127.0.0.1
#   -b  egressd binary (default bin/egressd, from `make build`)
#   -c  config without its listen section (default deployments/farm/egressd.farm.yaml)
#   -P  base port (default 13128): HAProxy listens on P (HTTP/CONNECT),
#       P+1 (SOCKS5) and P+2 (stats page); instance i uses P+10*i (HTTP),
#       P+10*i+1 (SOCKS5) and P+10*i+2 (admin)
#   -k  keep the work directory (configs, logs) after exit
#
# HAProxy comes from Debian's package (apt-get install haproxy). Ctrl-C or
# SIGTERM stops every process this script started, by PID.
set -eu

n=3
proxy_protocol=false
bin=bin/egressd
fragment=deployments/farm/egressd.farm.yaml
base=13128
keep=false
while getopts n:pb:c:P:k opt; do
	case $opt in
	n) n=$OPTARG ;;
	p) proxy_protocol=true ;;
	b) bin=$OPTARG ;;
	c) fragment=$OPTARG ;;
	P) base=$OPTARG ;;
	k) keep=true ;;
	*)
		sed -n '2,19p' "$0"
		exit 2
		;;
	esac
done

here=$(cd "$(dirname "$0")/.." && pwd)
template=$here/deployments/farm/haproxy.cfg.tmpl
command -v haproxy >/dev/null 2>&1 || {
	echo "farm: haproxy is not installed (apt-get install -y haproxy)" >&2
	exit 1
}
command -v curl >/dev/null 2>&1 || {
	echo "farm: curl is not installed" >&2
	exit 1
}
[ -x "$bin" ] || {
	echo "farm: $bin is not an executable egressd (make build)" >&2
	exit 1
}
case $n in
[1-9]) ;;
*)
	echo "farm: -n must be between 1 and 9" >&2
	exit 2
	;;
esac

work=$(mktemp -d "${TMPDIR:-/tmp}/egressd-farm.XXXXXX")
pids=""

cleanup() {
	trap - EXIT INT TERM
	for pid in $pids; do
		kill "$pid" 2>/dev/null || true
	done
	for pid in $pids; do
		wait "$pid" 2>/dev/null || true
	done
	if [ "$keep" = true ]; then
		echo "farm: configs and logs kept in $work"
	else
		rm -rf "$work"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

send_proxy=""
if [ "$proxy_protocol" = true ]; then
	send_proxy=" send-proxy-v2"
fi

http_servers=""
socks5_servers=""
i=1
while [ "$i" -le "$n" ]; do
	port=$((base + 10 * i))
	conf=$work/egressd-$i.yaml
	{
		echo "listen:"
		echo "  http: \"127.0.0.1:$port\""
		echo "  socks5: \"127.0.0.1:$((port + 1))\""
		echo "  admin: \"127.0.0.1:$((port + 2))\""
		echo "  proxy_protocol: $proxy_protocol"
		if [ "$proxy_protocol" = true ]; then
			echo "  trusted_proxies: [\"127.0.0.1/32\"]"
		fi
		cat "$fragment"
	} >"$conf"
	"$bin" serve --config "$conf" >"$work/egressd-$i.log" 2>&1 &
	pids="$pids $!"
	http_servers="$http_servers    server egressd$i 127.0.0.1:$port check port $((port + 2))$send_proxy
"
	socks5_servers="$socks5_servers    server egressd$i 127.0.0.1:$((port + 1)) check port $((port + 2))$send_proxy
"
	i=$((i + 1))
done

# Wait (bounded) until every instance is ready.
i=1
while [ "$i" -le "$n" ]; do
	admin=$((base + 10 * i + 2))
	tries=0
	until curl -fs -m 1 -o /dev/null "http://127.0.0.1:$admin/readyz"; do
		tries=$((tries + 1))
		if [ "$tries" -ge 50 ]; then
			echo "farm: egressd $i is not ready; log:" >&2
			cat "$work/egressd-$i.log" >&2
			exit 1
		fi
		sleep 0.2
	done
	i=$((i + 1))
done

# Render the HAProxy config: ${NAME} placeholders from the environment.
HTTP_BIND=127.0.0.1:$base \
	SOCKS5_BIND=127.0.0.1:$((base + 1)) \
	STATS_BIND=127.0.0.1:$((base + 2)) \
	STATS_SOCKET=$work/haproxy.sock \
	HTTP_SERVERS=$http_servers \
	SOCKS5_SERVERS=$socks5_servers \
	awk '{
		while (match($0, /\$\{[A-Z0-9_]+\}/)) {
			name = substr($0, RSTART + 2, RLENGTH - 3)
			$0 = substr($0, 1, RSTART - 1) ENVIRON[name] substr($0, RSTART + RLENGTH)
		}
		print
	}' "$template" >"$work/haproxy.cfg"
haproxy -c -q -f "$work/haproxy.cfg"
haproxy -db -f "$work/haproxy.cfg" >"$work/haproxy.log" 2>&1 &
pids="$pids $!"

cat <<EOF
egressd farm: $n instances behind HAProxy (PROXY v2: $proxy_protocol)
  HTTP_PROXY=http://127.0.0.1:$base HTTPS_PROXY=http://127.0.0.1:$base
  SOCKS5:     socks5h://127.0.0.1:$((base + 1))
  stats:      http://127.0.0.1:$((base + 2))/
  instance i: http 127.0.0.1:$((base + 10))+10*(i-1), admin +2 (SIGTERM one to watch it drain)
  work dir:   $work
Ctrl-C stops the farm.
EOF
wait
