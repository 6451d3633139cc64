#!/usr/bin/env bash
# Benchmark egressd against direct (no proxy), Squid, smokescreen and Dante
# (SOCKS5), and write docs/benchmarks.md and docs/benchmarks.svg.
#
#   make bench                   full run, about 18-20 minutes (3 runs)
#   BENCH_QUICK=1 make bench     about 5-6 minutes, smaller counts
#
# What it does, all on loopback but the in-line step:
#   - installs what it needs: Debian's squid and dante-server (apt-get, as
#     root), smokescreen with `go install` into a scratch directory outside
#     the repository (never vendored);
#   - builds egressd and cmd/egressbench (the load tool, which also runs the
#     origins and the DNS server the proxies resolve bench names through);
#   - writes a config for each proxy that allows exactly the bench origins;
#   - runs each proxy RUNS times, alternating (direct, egressd, squid,
#     smokescreen, dante, then again), a fresh proxy process per client kind,
#     the proxy pinned to CPU 0 and the load tool to CPU 1 (taskset); the
#     cache kind runs egressd and Squid with their memory caches on; the
#     inspect kind runs egressd with an inspect rule and Squid with ssl-bump
#     (Debian's squid-openssl), both with the same inspection CA;
#   - runs egressd a second time on its default DNS path (egressd-sysdns:
#     dns.servers empty, in a mount namespace whose /etc/resolv.conf names
#     the load tool's DNS server) for the TLS scenarios, whose tables report
#     DNS queries per tunnel;
#   - DLP: forwarded POSTs (1 KiB, 1 MiB) and held 1 MiB uploads through
#     egressd uninspected, egressd-dlp (every built-in detector), egressd-icap
#     (asking c-icap's srv_content_filtering) and squid-icap (Squid asking the
#     same c-icap); Debian's c-icap runs on the load tool's CPU;
#   - runs egressd a third time with every tunnel through a parent proxy
#     (egressd-chain: policy.default_via naming a minimal CONNECT proxy,
#     egressbench parent, pinned to the load tool's CPU) for the tunnel
#     scenarios: egressd's CPU per new tunnel through a parent against its
#     direct tunnels, and after each such run `egressbench floor` (the CPU
#     one process pays for a request and its answer with another process,
#     the least any parent adds);
#   - runs BenchmarkInlineTunnel (test/) once per round: egressd's CPU per
#     new TLS tunnel through the in-line gateway (redirected by the shipped
#     nftables rules in network namespaces, since nothing redirects on
#     loopback) against CONNECT on the same process;
#   - profiles egressd (pprof from its admin listener) unless BENCH_PPROF=0;
#   - stops everything it started, by PID, on exit.
#
# Environment:
#   BENCH_QUICK=1         smaller counts and shorter bounds
#   BENCH_RUNS=N          repetitions per proxy (default 3, quick 2)
#   BENCH_PROXIES="..."   peers and egressd to run (default: egressd egressd-sysdns egressd-chain squid smokescreen
#                         dante egressd-dlp egressd-icap squid-icap)
#   BENCH_KINDS="..."     client kinds to run (default: all: direct connect http socks5 cache inspect inline;
#                         inline is the in-line gateway's Go benchmark, run when egressd is in BENCH_PROXIES)
#   BENCH_SCENARIOS=a,b   only these scenarios in every session (default: each session's own; for
#                         focused runs, e.g. BENCH_PROXIES="egressd egressd-dlp" BENCH_KINDS=http
#                         BENCH_SCENARIOS=post_1k,post_1m)
#   BENCH_TOOL_ARGS="..." extra flags for every `egressbench run` (e.g. "-paced-tunnels-rate 3000"
#                         to see how a figure moves with the load; the tables then describe that run)
#   BENCH_PPROF=0|1       profile egressd after the runs (default 1; 0 with BENCH_QUICK)
#   BENCH_SCRATCH=DIR     scratch directory (default /tmp/egressd-bench); must be outside the repo
#   BENCH_LOGS=DIR        the proxies' logs (default /dev/shm/egressd-bench-logs when /dev/shm is a
#                         tmpfs, else $BENCH_SCRATCH/logs); each session's logs replace the last's
#   BENCH_DNS=IP:53       the load tool's DNS server (default 127.0.0.153:53; Squid only takes port 53)
#   BENCH_DEADLINE=S      start no new session after S seconds (default 1200, quick 300)
#   BENCH_NO_INSTALL=1    use what is installed; skip a peer that is missing
#   BENCH_RESULTS=DIR     raw results (default results/bench, git-ignored)
#   BENCH_DOCS=DIR        where benchmarks.md and benchmarks.svg go (default docs)
#   BENCH_EGRESSD_ENV="K=V ..."  egressd's environment additions (default: the GODEBUG of
#                         deployments/systemd/egressd.service, which the image and the Kubernetes
#                         manifest set too, so the bench measures what operators run; "" for none)
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
QUICK=${BENCH_QUICK:-0}
PROXIES=${BENCH_PROXIES:-egressd egressd-sysdns egressd-chain squid smokescreen dante egressd-dlp egressd-icap squid-icap}
SCRATCH=${BENCH_SCRATCH:-/tmp/egressd-bench}
DNS_ADDR=${BENCH_DNS:-127.0.0.153:53}
SMOKESCREEN_VERSION=v0.1.0
RESULTS=${BENCH_RESULTS:-$ROOT/results/bench}
DOCS=${BENCH_DOCS:-$ROOT/docs}
# egressd runs with the runtime settings the deployments give it.
DEPLOY_GODEBUG=$(sed -n 's/^Environment=GODEBUG=//p' deployments/systemd/egressd.service)
EGRESSD_ENV=${BENCH_EGRESSD_ENV-${DEPLOY_GODEBUG:+GODEBUG=$DEPLOY_GODEBUG}}
if [[ $QUICK == 1 ]]; then
	RUNS=${BENCH_RUNS:-2}
	DEADLINE=${BENCH_DEADLINE:-300}
	PPROF=${BENCH_PPROF:-0}
	QUICKFLAG=-quick
	RUN_BOUND=90
else
	RUNS=${BENCH_RUNS:-3}
	DEADLINE=${BENCH_DEADLINE:-1200}
	PPROF=${BENCH_PPROF:-1}
	QUICKFLAG=
	RUN_BOUND=240
fi
START=$SECONDS
# The proxies' logs (an access line per request, hundreds of MB per run) go to
# memory: on disk their writeback would run during later measurements and
# charge its work to whichever proxy is on the CPU at the time.
if [[ -n ${BENCH_LOGS:-} ]]; then
	LOGS=$BENCH_LOGS
elif [[ $(stat -f -c %T /dev/shm 2>/dev/null) == tmpfs ]]; then
	LOGS=/dev/shm/egressd-bench-logs
else
	LOGS=$SCRATCH/logs
fi

log() { printf '== %s\n' "$*" >&2; }
die() { printf 'bench.sh: %s\n' "$*" >&2; exit 1; }

case $SCRATCH in
"$ROOT" | "$ROOT"/*) die "BENCH_SCRATCH must be outside the repository" ;;
esac
[[ $(id -u) == 0 ]] || die "run as root: it installs Debian packages and serves DNS on port 53"
command -v taskset >/dev/null || die "taskset (util-linux) is missing"
[[ $(nproc) -ge 2 ]] || die "needs at least 2 CPUs (proxy on CPU 0, load tool on CPU 1)"

# --- everything this script starts, stopped by PID on exit -----------------
STARTED=()
stop_pid() { # pid
	local pid=$1 i
	kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
	kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < 100; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		kill -KILL "$pid" 2>/dev/null || true
	fi
	wait "$pid" 2>/dev/null || true
}
cleanup() {
	local pid
	for pid in "${STARTED[@]}"; do
		stop_pid "$pid"
	done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$SCRATCH/bin" "$RESULTS"
rm -f "$RESULTS"/*.json "$RESULTS"/*.txt "$RESULTS"/*.log "$RESULTS"/*.pprof
COMMANDS=$RESULTS/commands.txt
META=$RESULTS/meta.txt
: >"$COMMANDS"
: >"$META"
note() { printf '%s\n' "$*" >>"$META"; }
record() { printf '%s\n' "$*" >>"$COMMANDS"; }

# --- install -----------------------------------------------------------------
apt_updated=0
apt_install() { # package
	if [[ ${BENCH_NO_INSTALL:-0} == 1 ]]; then
		return 1
	fi
	if [[ $apt_updated == 0 ]]; then
		log "apt-get update"
		DEBIAN_FRONTEND=noninteractive apt-get update -qq >"$SCRATCH/apt.log" 2>&1 || return 1
		apt_updated=1
	fi
	log "apt-get install -y $1"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >>"$SCRATCH/apt.log" 2>&1
}
have_peer() { # name
	case $1 in
	# squid-openssl: Debian's Squid built with OpenSSL (ssl-bump, for the
	# inspect kind); it replaces the plain squid package.
	squid) squid -v 2>/dev/null | grep -q -- --with-openssl || apt_install squid-openssl ;;
	dante) command -v danted >/dev/null || apt_install dante-server ;;
	smokescreen)
		[[ -x $SCRATCH/bin/smokescreen ]] && return 0
		[[ ${BENCH_NO_INSTALL:-0} == 1 ]] && return 1
		log "go install github.com/stripe/smokescreen@$SMOKESCREEN_VERSION into $SCRATCH/bin"
		(cd "$SCRATCH" && GOBIN=$SCRATCH/bin GOFLAGS=-mod=mod go install "github.com/stripe/smokescreen@$SMOKESCREEN_VERSION") >"$SCRATCH/smokescreen-install.log" 2>&1
		;;
	egressd)
		log "go build ./cmd/egressd"
		# Built without -s -w so that pprof output has symbols.
		go build -trimpath -o "$SCRATCH/bin/egressd" ./cmd/egressd >"$SCRATCH/egressd-build.log" 2>&1
		;;
	egressd-dlp | egressd-icap)
		[[ -x $SCRATCH/bin/egressd ]] ||
			go build -trimpath -o "$SCRATCH/bin/egressd" ./cmd/egressd >"$SCRATCH/egressd-build.log" 2>&1
		[[ $1 == egressd-dlp ]] || have_cicap
		;;
	squid-icap)
		{ command -v squid >/dev/null || apt_install squid; } && have_cicap
		;;
	egressd-chain)
		[[ -x $SCRATCH/bin/egressd ]] ||
			go build -trimpath -o "$SCRATCH/bin/egressd" ./cmd/egressd >"$SCRATCH/egressd-build.log" 2>&1
		;;
	egressd-sysdns)
		# resolv.conf servers are asked on port 53 only; a private mount
		# namespace gives egressd its own /etc/resolv.conf.
		[[ ${DNS_ADDR##*:} == 53 ]] && unshare -m true 2>/dev/null || return 1
		[[ -x $SCRATCH/bin/egressd ]] ||
			go build -trimpath -o "$SCRATCH/bin/egressd" ./cmd/egressd >"$SCRATCH/egressd-build.log" 2>&1
		;;
	*) return 1 ;;
	esac
}
# c-icap (Debian) with its content-filtering module: the ICAP service of
# egressd-icap and squid-icap.
have_cicap() {
	command -v c-icap >/dev/null || apt_install c-icap || return 1
	compgen -G '/usr/lib/*/c_icap/srv_content_filtering.so' >/dev/null || apt_install libc-icap-mod-contentfiltering
}
log "go build ./cmd/egressbench"
go build -trimpath -o "$SCRATCH/bin/egressbench" ./cmd/egressbench
EB=$SCRATCH/bin/egressbench
ACTIVE=()
for p in $PROXIES; do
	if have_peer "$p"; then
		ACTIVE+=("$p")
	else
		log "skipping $p: not available (see $SCRATCH/*.log)"
		note "skipped: $p (not available: install or build failed)"
	fi
done

# --- ports and configs -------------------------------------------------------
read -r P_BULK P_ECHO P_HTTP P_TLS P_SQUID P_SMOKE P_EG_HTTP P_EG_SOCKS P_EG_ADMIN P_DANTE P_ICAP P_PARENT < <("$EB" ports -n 12)
ORIGINS=(-bulk-addr "127.0.0.1:$P_BULK" -echo-addr "127.0.0.1:$P_ECHO" -http-addr "127.0.0.1:$P_HTTP"
	-tls-addr "127.0.0.1:$P_TLS" -dns-listen "$DNS_ADDR")
DNS_IP=${DNS_ADDR%:*}
if ss -Hlun "src $DNS_IP" 2>/dev/null | grep -q ":${DNS_ADDR##*:}\b"; then
	die "$DNS_ADDR is in use; set BENCH_DNS to a free loopback IP on port 53"
fi

CONF=$SCRATCH/conf
rm -rf "$CONF"
mkdir -p "$CONF/squid" "$CONF/squid-cache" "$CONF/dante" "$CONF/egressd" "$CONF/egressd-sysdns" "$CONF/egressd-cache" "$CONF/egressd-chain" "$CONF/smokescreen" \
	"$CONF/egressd-dlp" "$CONF/egressd-icap" "$CONF/squid-icap" "$CONF/c-icap" "$CONF/egressd-inspect" "$CONF/squid-bump"
# The certificates every run shares: the HTTPS origin's CA (proxies trust it
# for their own TLS to the origin) and the inspection CA (egressd's
# tls_inspection and Squid's ssl-bump sign with it; the inspect kind's
# clients trust its root).
PKI=$CONF/pki
"$EB" pki -dir "$PKI" >/dev/null

cat >"$CONF/egressd/egressd.yaml" <<EOF
# egressd's real defaults (SNI check on, access log on, metrics on), with
# one rule allowing the bench origins by name and by loopback IP literal
# (allow_ranges must be more specific than the default deny of 127.0.0.0/8:
# an exact tie is denied).
listen:
  http: "127.0.0.1:$P_EG_HTTP"
  socks5: "127.0.0.1:$P_EG_SOCKS"
  admin: "127.0.0.1:$P_EG_ADMIN"
dns:
  servers: ["$DNS_ADDR"]
policy:
  mode: enforce
  deny_ranges: [default]
  require_sni: true
  tls_ports: [443, $P_TLS]
  rules:
    - name: bench
      hosts: ["origin.bench.test"]
      cidrs: ["127.0.0.1/32"]
      allow_ranges: ["127.0.0.1/32"]
      ports: [$P_BULK, $P_ECHO, $P_HTTP, $P_TLS]
admin:
  pprof: true
# The idle scenario holds 3,000 tunnels from one client address; the default
# per-client cap (1,000) would refuse two thirds of them. No peer has such a
# cap configured here.
limits:
  max_connections: 10000
  max_connections_per_client: 5000
timeouts:
  drain: 1s
  drain_delay: 0s
log:
  access: true
EOF

# egressd-sysdns: the same config on egressd's default DNS path (no
# dns.servers: the name servers of /etc/resolv.conf, which names the load
# tool's DNS server in egressd's own mount namespace).
sed 's|^  servers: .*|  servers: []|' "$CONF/egressd/egressd.yaml" >"$CONF/egressd-sysdns/egressd.yaml"
printf 'nameserver %s\n' "${DNS_ADDR%:*}" >"$CONF/egressd-sysdns/resolv.conf"

# The inspect kind: an inspect rule for the TLS origin's name and port first,
# tls_inspection with the bench's inspection CA, and the origin CA trusted.
{
	sed 's|^  rules:$|  rules:\n    - name: bench-inspect\n      hosts: ["origin.bench.test"]\n      allow_ranges: ["127.0.0.1/32"]\n      ports: ['"$P_TLS"']\n      inspect: true|' "$CONF/egressd/egressd.yaml"
	printf 'tls_inspection:\n  ca_cert: %s\n  ca_key: %s\n  upstream_ca_file: %s\n' "$PKI/inspect-ca.pem" "$PKI/inspect-ca.key" "$PKI/origin-root.pem"
} >"$CONF/egressd-inspect/egressd.yaml"
# egressd-chain: the same config with every allowed tunnel handed to a parent
# proxy (policy.default_via), the minimal CONNECT proxy on 127.0.0.1:$P_PARENT
# (egressbench parent, a process of its own pinned to the load tool's CPU).
sed -e "s|^policy:|upstream_proxies:\n  parent:\n    urls: [\"http://127.0.0.1:$P_PARENT\"]\npolicy:\n  default_via: parent|" \
	"$CONF/egressd/egressd.yaml" >"$CONF/egressd-chain/egressd.yaml"

# The cache kind: the same config with the HTTP cache on.
{
	cat "$CONF/egressd/egressd.yaml"
	printf 'cache:\n  http:\n    max_bytes: 512MiB\n    max_object_bytes: 8MiB\n'
} >"$CONF/egressd-cache/egressd.yaml"

# egressd-dlp: the same config, the bench rule inspected by every built-in
# detector (dlp.max_scan_bytes 1 MiB: a 1 MiB body is held and scanned
# whole). egressd-icap: the rule asks c-icap, and nothing else.
sed 's|^      ports: \[\(.*\)\]$|      ports: [\1]\n      dlp: bench|' "$CONF/egressd/egressd.yaml" >"$CONF/egressd-dlp/egressd.yaml"
cp "$CONF/egressd-dlp/egressd.yaml" "$CONF/egressd-icap/egressd.yaml"
cat >>"$CONF/egressd-dlp/egressd.yaml" <<EOF
dlp:
  max_scan_bytes: 1MiB
  profiles:
    bench:
      detectors: [aws_access_key, aws_secret_key, private_key, github_token, gitlab_token, slack_token, card_number, us_ssn]
EOF
cat >>"$CONF/egressd-icap/egressd.yaml" <<EOF
dlp:
  max_scan_bytes: 1MiB
  icap:
    url: "icap://127.0.0.1:$P_ICAP/srv_cfg_filter"
    timeout: 5s
    failure: closed
  profiles:
    bench:
      icap: true
EOF

# c-icap: srv_content_filtering with a pattern the bench bodies never hold
# (every request comes back unchanged), bodies kept in memory.
CICAP_MODS=$(dirname "$(compgen -G '/usr/lib/*/c_icap/srv_echo.so' | head -1)")
cat >"$CONF/c-icap/c-icap.conf" <<EOF
PidFile $CONF/c-icap/c-icap.pid
CommandsSocket $CONF/c-icap/c-icap.ctl
Timeout 60
MaxKeepAliveRequests 0
KeepAliveTimeout 600
StartServers 2
MaxServers 4
MinSpareThreads 8
MaxSpareThreads 32
ThreadsPerChild 32
MaxRequestsPerChild 0
Port 127.0.0.1:$P_ICAP
TmpDir $CONF/c-icap
MaxMemObject 4194304
DebugLevel 0
Pipelining on
ModulesDir $CICAP_MODS
ServicesDir $CICAP_MODS
TemplateDir /usr/share/c_icap/templates/
TemplateDefaultLanguage en
LoadMagicFile /etc/c-icap/c-icap.magic
ServerLog $LOGS/c-icap-server.log
AccessLog /dev/null
acl all src 0.0.0.0/0.0.0.0
Service srv_cfg_filter srv_content_filtering.so
srv_content_filtering.MaxBodyData 4M
srv_content_filtering.Match secret body /EGRESSBENCH-NEVER-[0-9]{12}/ score=10
srv_content_filtering.Profile dlp block score{secret>5}
srv_content_filtering.ProfileOption dlp AnyContentType
srv_content_filtering.ProfileAccess dlp all
EOF

cat >"$CONF/squid/squid.conf" <<EOF
http_port 127.0.0.1:$P_SQUID
pid_filename $CONF/squid/squid.pid
access_log stdio:$LOGS/squid-access.log
cache_log $LOGS/squid-cache.log
coredump_dir $CONF/squid
cache deny all
pinger_enable off
dns_nameservers $DNS_IP
visible_hostname egressbench
shutdown_lifetime 1 seconds
acl bench_src src 127.0.0.0/8
acl bench_ports port $P_BULK $P_ECHO $P_HTTP $P_TLS
acl bench_name dstdomain origin.bench.test
acl bench_ip dst 127.0.0.1/32
http_access deny !bench_ports
http_access allow bench_src bench_name
http_access allow bench_src bench_ip
http_access deny all
EOF
# The cache kind: Squid with its memory cache on (no cache_dir: memory only),
# objects up to 8 MB kept in memory.
sed -e '/^cache deny all$/d' -e "s|$CONF/squid/|$CONF/squid-cache/|g" "$CONF/squid/squid.conf" >"$CONF/squid-cache/squid.conf"
printf 'cache_mem 512 MB\nmaximum_object_size_in_memory 8 MB\n' >>"$CONF/squid-cache/squid.conf"
sed -e "s|$CONF/squid/squid.pid|$CONF/squid-icap/squid.pid|" -e "s|coredump_dir $CONF/squid|coredump_dir $CONF/squid-icap|" \
	"$CONF/squid/squid.conf" >"$CONF/squid-icap/squid.conf"
cat >>"$CONF/squid-icap/squid.conf" <<EOF
# The same c-icap service as egressd-icap, for every request (REQMOD).
icap_enable on
icap_preview_enable on
icap_persistent_connections on
icap_send_client_ip on
icap_service dlp_req reqmod_precache bypass=0 icap://127.0.0.1:$P_ICAP/srv_cfg_filter
adaptation_access dlp_req allow all
EOF
# The inspect kind: Squid with ssl-bump on the same port, peeking at the
# ClientHello (step 1) and then bumping, with the same inspection CA and
# the origin CA for its own TLS to the origin; certificates from
# security_file_certgen, cached in memory.
sed -e "s|$CONF/squid/|$CONF/squid-bump/|g" \
	-e "s|^http_port 127.0.0.1:$P_SQUID\$|http_port 127.0.0.1:$P_SQUID ssl-bump tls-cert=$CONF/squid-bump/inspect-ca.pem tls-key=$CONF/squid-bump/inspect-ca.key generate-host-certificates=on dynamic_cert_mem_cache_size=16MB|" \
	"$CONF/squid/squid.conf" >"$CONF/squid-bump/squid.conf"
cat >>"$CONF/squid-bump/squid.conf" <<EOF
sslcrtd_program /usr/lib/squid/security_file_certgen -s $CONF/squid-bump/ssl_db -M 16MB
sslcrtd_children 8 startup=1 idle=1
acl step1 at_step SslBump1
ssl_bump peek step1
ssl_bump bump all
tls_outgoing_options cafile=$PKI/origin-root.pem
EOF
cp "$PKI/inspect-ca.pem" "$PKI/inspect-ca.key" "$CONF/squid-bump/"
/usr/lib/squid/security_file_certgen -c -s "$CONF/squid-bump/ssl_db" -M 16MB >/dev/null
chown -R proxy:proxy "$CONF/squid" "$CONF/squid-cache" "$CONF/squid-icap" "$CONF/squid-bump" 2>/dev/null || true
mkdir -p "$LOGS"
touch "$LOGS/squid-access.log" "$LOGS/squid-cache.log"
chown proxy:proxy "$LOGS/squid-access.log" "$LOGS/squid-cache.log" 2>/dev/null || true

cat >"$CONF/smokescreen/acl.yaml" <<EOF
---
version: v1
services: []
default:
  project: egressbench
  action: enforce
  allowed_domains:
    - origin.bench.test
    - 127.0.0.1
EOF
cat >"$CONF/smokescreen/config.yaml" <<EOF
ip: 127.0.0.1
port: $P_SMOKE
allow_ranges: ["127.0.0.1/32"]
resolver_addresses: ["$DNS_ADDR"]
acl_file: $CONF/smokescreen/acl.yaml
allow_missing_role: true
EOF

cat >"$CONF/dante/danted.conf" <<EOF
logoutput: $LOGS/danted.log
internal: 127.0.0.1 port = $P_DANTE
external: 127.0.0.1
clientmethod: none
socksmethod: none
user.privileged: root
user.unprivileged: nobody
client pass {
  from: 127.0.0.0/8 to: 127.0.0.0/8
  log: error
}
socks pass {
  from: 127.0.0.0/8 to: 127.0.0.1/32 port = $P_BULK
  command: connect
  log: connect disconnect error
}
socks pass {
  from: 127.0.0.0/8 to: 127.0.0.1/32 port = $P_ECHO
  command: connect
  log: connect disconnect error
}
socks pass {
  from: 127.0.0.0/8 to: 127.0.0.1/32 port = $P_HTTP
  command: connect
  log: connect disconnect error
}
socks pass {
  from: 127.0.0.0/8 to: 127.0.0.1/32 port = $P_TLS
  command: connect
  log: connect disconnect error
}
socks block {
  from: 0.0.0.0/0 to: 0.0.0.0/0
  log: connect error
}
EOF
# Dante resolves through libc, which reads /etc/resolv.conf: it runs in its
# own mount namespace where that file names the load tool's DNS server.
printf 'nameserver %s\n' "$DNS_IP" >"$CONF/dante/resolv.conf"
DANTE_DNS=1
unshare -m true 2>/dev/null || DANTE_DNS=0

# --- proxies -------------------------------------------------------------------
wait_port() { # port
	local i
	for ((i = 0; i < 100; i++)); do
		if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
			return 0
		fi
		sleep 0.1
	done
	return 1
}

PROXY_PID=
start_proxy() { # name kind -> PROXY_PID, PROXY_ADDR
	local name=$1 kind=$2 logdir=$LOGS f
	mkdir -p "$logdir"
	# Each session starts with empty logs (bounded memory); no writeback
	# from earlier work (builds, logs, results) runs during a measurement.
	for f in "$logdir"/*; do
		[[ -f $f ]] && : >"$f"
	done
	sync
	case $name in
	egressd)
		local conf=$CONF/egressd/egressd.yaml
		[[ $kind == cache ]] && conf=$CONF/egressd-cache/egressd.yaml
		[[ $kind == inspect ]] && conf=$CONF/egressd-inspect/egressd.yaml
		record "env $EGRESSD_ENV taskset -c 0 $SCRATCH/bin/egressd serve --config $conf >>$logdir/egressd-access.log"
		# shellcheck disable=SC2086 # EGRESSD_ENV is a list of K=V words
		env $EGRESSD_ENV taskset -c 0 "$SCRATCH/bin/egressd" serve --config "$conf" >>"$logdir/egressd-access.log" 2>>"$logdir/egressd-stderr.log" &
		PROXY_PID=$!
		PROXY_ADDR=127.0.0.1:$P_EG_HTTP
		[[ $kind == socks5 ]] && PROXY_ADDR=127.0.0.1:$P_EG_SOCKS
		;;
	egressd-chain)
		# The same environment as egressd's direct runs (the deployment's
		# GODEBUG): the chain's ratio must compare like with like.
		record "env $EGRESSD_ENV taskset -c 0 $SCRATCH/bin/egressd serve --config $CONF/egressd-chain/egressd.yaml >>$logdir/egressd-chain-access.log"
		# shellcheck disable=SC2086 # EGRESSD_ENV is a list of K=V words
		env $EGRESSD_ENV taskset -c 0 "$SCRATCH/bin/egressd" serve --config "$CONF/egressd-chain/egressd.yaml" >>"$logdir/egressd-chain-access.log" 2>>"$logdir/egressd-chain-stderr.log" &
		PROXY_PID=$!
		PROXY_ADDR=127.0.0.1:$P_EG_HTTP
		;;
	egressd-sysdns)
		record "env $EGRESSD_ENV taskset -c 0 unshare -m sh -c 'mount --bind $CONF/egressd-sysdns/resolv.conf /etc/resolv.conf && exec $SCRATCH/bin/egressd serve --config $CONF/egressd-sysdns/egressd.yaml' >>$logdir/egressd-sysdns-access.log"
		# shellcheck disable=SC2086
		env $EGRESSD_ENV taskset -c 0 unshare -m sh -c "mount --bind '$CONF/egressd-sysdns/resolv.conf' /etc/resolv.conf && exec '$SCRATCH/bin/egressd' serve --config '$CONF/egressd-sysdns/egressd.yaml'" \
			>>"$logdir/egressd-sysdns-access.log" 2>>"$logdir/egressd-sysdns-stderr.log" &
		PROXY_PID=$!
		PROXY_ADDR=127.0.0.1:$P_EG_HTTP
		;;
	egressd-dlp | egressd-icap)
		# The same runtime environment as egressd uninspected: the DLP
		# tables compare the two.
		record "env $EGRESSD_ENV taskset -c 0 $SCRATCH/bin/egressd serve --config $CONF/$name/egressd.yaml >>$logdir/$name-access.log"
		# shellcheck disable=SC2086 # EGRESSD_ENV is a list of K=V words
		env $EGRESSD_ENV taskset -c 0 "$SCRATCH/bin/egressd" serve --config "$CONF/$name/egressd.yaml" >>"$logdir/$name-access.log" 2>>"$logdir/$name-stderr.log" &
		PROXY_PID=$!
		PROXY_ADDR=127.0.0.1:$P_EG_HTTP
		;;
	squid-icap)
		rm -f "$CONF/squid-icap/squid.pid"
		record "taskset -c 0 squid -N -f $CONF/squid-icap/squid.conf"
		taskset -c 0 squid -N -f "$CONF/squid-icap/squid.conf" >>"$logdir/squid-icap-stdout.log" 2>&1 &
		PROXY_PID=$!
		PROXY_ADDR=127.0.0.1:$P_SQUID
		;;
	squid)
		local sdir=$CONF/squid
		[[ $kind == cache ]] && sdir=$CONF/squid-cache
		[[ $kind == inspect ]] && sdir=$CONF/squid-bump
		rm -f "$sdir/squid.pid"
		record "taskset -c 0 squid -N -f $sdir/squid.conf"
		taskset -c 0 squid -N -f "$sdir/squid.conf" >>"$logdir/squid-stdout.log" 2>&1 &
		PROXY_PID=$!
		PROXY_ADDR=127.0.0.1:$P_SQUID
		;;
	smokescreen)
		record "taskset -c 0 $SCRATCH/bin/smokescreen --config-file $CONF/smokescreen/config.yaml"
		taskset -c 0 "$SCRATCH/bin/smokescreen" --config-file "$CONF/smokescreen/config.yaml" >>"$logdir/smokescreen.log" 2>&1 &
		PROXY_PID=$!
		PROXY_ADDR=127.0.0.1:$P_SMOKE
		;;
	dante)
		if [[ $DANTE_DNS == 1 ]]; then
			record "taskset -c 0 unshare -m sh -c 'mount --bind $CONF/dante/resolv.conf /etc/resolv.conf && exec danted -f $CONF/dante/danted.conf'"
			taskset -c 0 unshare -m sh -c "mount --bind '$CONF/dante/resolv.conf' /etc/resolv.conf && exec danted -f '$CONF/dante/danted.conf'" >>"$logdir/dante-stdout.log" 2>&1 &
		else
			record "taskset -c 0 danted -f $CONF/dante/danted.conf"
			taskset -c 0 danted -f "$CONF/dante/danted.conf" >>"$logdir/dante-stdout.log" 2>&1 &
		fi
		PROXY_PID=$!
		PROXY_ADDR=127.0.0.1:$P_DANTE
		;;
	esac
	STARTED+=("$PROXY_PID")
	if ! wait_port "${PROXY_ADDR##*:}"; then
		log "$name did not start listening on $PROXY_ADDR (logs in $logdir)"
		stop_pid "$PROXY_PID"
		return 1
	fi
}

kinds_of() { # proxy
	local k
	for k in $(all_kinds_of "$1"); do
		[[ -z ${BENCH_KINDS:-} || " $BENCH_KINDS " == *" $k "* ]] && echo "$k"
	done
	return 0
}
all_kinds_of() { # proxy
	case $1 in
	egressd) echo connect http socks5 cache inspect ;;
	egressd-sysdns | egressd-chain) echo connect ;;
	squid) echo connect http cache inspect ;;
	smokescreen) echo connect http ;;
	dante) echo socks5 ;;
	egressd-dlp | egressd-icap | squid-icap) echo http ;;
	esac
}

run_tool() { # label kind run proxy-addr pid [extra flags...]
	local label=$1 kind=$2 run=$3 addr=$4 pid=$5
	shift 5
	local args=(run -kind "$kind" -label "$label" -run "$run" -json "$RESULTS/$label-$kind.json"
		-max-time "${RUN_BOUND}s" -pki "$PKI" "${ORIGINS[@]}")
	[[ -n $QUICKFLAG ]] && args+=("$QUICKFLAG")
	# shellcheck disable=SC2206 # BENCH_TOOL_ARGS is words by design
	args+=(${BENCH_TOOL_ARGS:-})
	[[ $kind != direct ]] && args+=(-proxy "$addr" -proxy-pid "$pid")
	args+=("$@")
	record "taskset -c 1 $EB ${args[*]}"
	timeout --signal=INT $((RUN_BOUND + 30)) taskset -c 1 "$EB" "${args[@]}" 2>>"$RESULTS/bench-stderr.log" | tee -a "$RESULTS/bench.log" ||
		log "$label $kind run $run: egressbench reported errors (see $RESULTS/bench-stderr.log)"
}

session() { # name kind run
	local name=$1 kind=$2 run=$3 extra=()
	if ((SECONDS - START > DEADLINE)); then
		log "time bound of ${DEADLINE}s reached: skipping $name $kind run $run"
		note "not run (time bound): $name $kind run $run"
		return 0
	fi
	if [[ $name == direct ]]; then
		run_tool direct direct "$run" "" 0
		return 0
	fi
	if [[ $name == egressd-sysdns ]]; then
		extra=(-scenarios tls_tunnels,tls_tunnels_paced)
	fi
	# The DLP tables: egressd uninspected, inspected, and Squid with ICAP.
	case $name in
	egressd) [[ $kind == http ]] && extra=(-scenarios "forward,forward_paced,$DLP_SCENARIOS") ;;
	egressd-dlp | egressd-icap | squid-icap) extra=(-scenarios "$DLP_SCENARIOS") ;;
	esac
	local parent_pid=
	if [[ $name == egressd-chain ]]; then
		extra=(-scenarios tunnels,tunnels_paced,tls_tunnels,tls_tunnels_paced)
		record "taskset -c 1 $EB parent -listen 127.0.0.1:$P_PARENT"
		taskset -c 1 "$EB" parent -listen "127.0.0.1:$P_PARENT" 2>>"$RESULTS/parent-stderr.log" &
		parent_pid=$!
		STARTED+=("$parent_pid")
		wait_port "$P_PARENT" || { log "the parent proxy did not start"; stop_pid "$parent_pid"; return 0; }
	fi
	if [[ $name == dante && $DANTE_DNS == 0 ]]; then
		# Without its own resolv.conf Dante cannot resolve bench names.
		local no_dns=idle,keepalive,tunnels,tunnels_paced,bulk_up_1,bulk_up_8,bulk_down_1,bulk_down_8
		extra=(-scenarios "$no_dns")
	fi
	if [[ -n ${BENCH_SCENARIOS:-} ]]; then
		extra=(-scenarios "$BENCH_SCENARIOS")
	fi
	if start_proxy "$name" "$kind"; then
		run_tool "$name" "$kind" "$run" "$PROXY_ADDR" "$PROXY_PID" "${extra[@]}"
		stop_pid "$PROXY_PID"
	fi
	[[ -n $parent_pid ]] && stop_pid "$parent_pid"
	[[ $name == egressd-chain ]] && floor_session "$run"
	return 0
}

# floor_session measures, beside each round of the runs through a parent,
# the least a parent adds on this machine: one CONNECT and its answer with
# another process (egressbench floor; the chain table shows it). The
# measuring process runs where egressd runs, with its environment, at the
# tunnels_paced rate; the answering one where the parent runs.
floor_session() { # run
	local run=$1 rate n=10000 loop_n=200000 server_pid
	[[ -n ${BENCH_SCENARIOS:-} && ,$BENCH_SCENARIOS, != *,tunnels_paced,* ]] && return 0
	rate=$(sed -n 's/.*-paced-tunnels-rate[ =]\([0-9.]*\).*/\1/p' <<<"${BENCH_TOOL_ARGS:-}")
	rate=${rate:-2000}
	[[ $QUICK == 1 ]] && n=4000 loop_n=50000
	record "taskset -c 1 $EB floor -serve 127.0.0.1:$P_PARENT"
	taskset -c 1 "$EB" floor -serve "127.0.0.1:$P_PARENT" 2>>"$RESULTS/parent-stderr.log" &
	server_pid=$!
	STARTED+=("$server_pid")
	if wait_port "$P_PARENT"; then
		record "env $EGRESSD_ENV taskset -c 0 $EB floor -to 127.0.0.1:$P_PARENT -rate $rate -n $n -loop-n $loop_n -run $run -json $RESULTS/floor-exchange.json"
		env $EGRESSD_ENV taskset -c 0 "$EB" floor -to "127.0.0.1:$P_PARENT" -rate "$rate" -n "$n" -loop-n "$loop_n" -run "$run" \
			-json "$RESULTS/floor-exchange.json" 2>>"$RESULTS/bench-stderr.log" | tee -a "$RESULTS/bench.log" ||
			log "floor run $run: egressbench floor failed (see $RESULTS/bench-stderr.log)"
	else
		log "the floor's answering process did not start"
	fi
	stop_pid "$server_pid"
}

# --- runs ------------------------------------------------------------------------
note "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
note "mode: $([[ $QUICK == 1 ]] && echo 'quick (BENCH_QUICK=1)' || echo full), $RUNS runs per proxy, alternating; a fresh proxy process per client kind"
note "pinning: proxy on CPU 0 (taskset -c 0), load tool on CPU 1 (taskset -c 1)"
note "go: $(go version)"
note "egressd: $(git describe --always --dirty 2>/dev/null || echo unknown) (go build -trimpath), environment: ${EGRESSD_ENV:-(none added)}"
command -v squid >/dev/null && note "squid: $(squid -v | head -1) (Debian package $(dpkg-query -W -f '${Package} ${Version}' squid-openssl 2>/dev/null || echo squid))"
[[ -x $SCRATCH/bin/smokescreen ]] && note "smokescreen: $SMOKESCREEN_VERSION (go install github.com/stripe/smokescreen@$SMOKESCREEN_VERSION)"
command -v danted >/dev/null && note "dante: $(danted -v 2>&1 | head -1 | cut -d. -f1-3) (Debian dante-server; multi-process)"
note "origins: bulk 127.0.0.1:$P_BULK, echo 127.0.0.1:$P_ECHO, http 127.0.0.1:$P_HTTP, tls origin.bench.test:$P_TLS; DNS $DNS_ADDR (in the load tool)"
record "# $([[ $QUICK == 1 ]] && echo 'BENCH_QUICK=1 ')make bench  (scripts/bench.sh); the commands it ran, in order:"

DLP_SCENARIOS=dlp_held,post_1k,post_1m
if [[ " ${ACTIVE[*]} " == *" egressd-icap "* || " ${ACTIVE[*]} " == *" squid-icap "* ]]; then
	mkdir -p "$LOGS"
	record "taskset -c 1 c-icap -N -f $CONF/c-icap/c-icap.conf"
	taskset -c 1 c-icap -N -f "$CONF/c-icap/c-icap.conf" >>"$LOGS/c-icap-stdout.log" 2>&1 &
	STARTED+=("$!")
	wait_port "$P_ICAP" || die "c-icap did not start on 127.0.0.1:$P_ICAP (see $LOGS/c-icap-*.log)"
	note "c-icap: $(c-icap -V 2>&1 | head -1) (Debian c-icap with libc-icap-mod-contentfiltering, srv_content_filtering; on CPU 1 with the load tool)"
fi
for ((run = 1; run <= RUNS; run++)); do
	log "run $run of $RUNS"
	[[ -z ${BENCH_KINDS:-} || " $BENCH_KINDS " == *" direct "* ]] && session direct direct "$run"
	for p in "${ACTIVE[@]}"; do
		for kind in $(kinds_of "$p"); do
			log "$p $kind run $run ($((SECONDS - START))s elapsed)"
			session "$p" "$kind" "$run"
		done
	done
done

# --- policy matching benchmark (go test -bench) ------------------------------------
if [[ -d policy ]]; then
	log "go test -bench ./policy/"
	record "taskset -c 0 go test -run '^\$' -bench . -benchmem -benchtime 1s ./policy/"
	timeout 180 taskset -c 0 go test -run '^$' -bench . -benchmem -benchtime 1s ./policy/ >"$RESULTS/gobench.txt" 2>&1 || true
fi

# --- in-line gateway (go test -bench in test/) ----------------------------------------
# Nothing redirects on the host's loopback, so the in-line figure (issue 21:
# egressd's CPU per 1,000 new in-line TLS tunnels against CONNECT's) comes
# from BenchmarkInlineTunnel: one egressd (the binary built above) in the
# network namespaces of test/testenv.NewInline behind the shipped nftables
# rules, CONNECT then in-line tunnels on the same process. One go test per
# round, so that each pair is measured side by side; not pinned (the
# namespaces' clients, origin and DNS server run in the test binary).
INLINE_OUT=$RESULTS/inline-gobench.txt
if [[ " ${ACTIVE[*]} " == *" egressd "* ]] && [[ -z ${BENCH_KINDS:-} || " $BENCH_KINDS " == *" inline "* ]]; then
	INLINE_TUNNELS=5000
	[[ $QUICK == 1 ]] && INLINE_TUNNELS=2000
	: >"$INLINE_OUT"
	for ((run = 1; run <= RUNS; run++)); do
		log "in-line tunnels: go test -bench BenchmarkInlineTunnel ./test/, run $run of $RUNS"
		record "EGRESSD_BIN=$SCRATCH/bin/egressd go test -run '^\$' -bench BenchmarkInlineTunnel -benchtime ${INLINE_TUNNELS}x -count 1 ./test/"
		EGRESSD_BIN=$SCRATCH/bin/egressd timeout 300 go test -run '^$' -bench BenchmarkInlineTunnel -benchtime "${INLINE_TUNNELS}x" -count 1 ./test/ \
			>>"$INLINE_OUT" 2>&1 || log "in-line run $run: go test failed (see $INLINE_OUT)"
	done
	note "in-line: BenchmarkInlineTunnel (test/), $RUNS runs of ${INLINE_TUNNELS} tunnels per path, egressd in network namespaces behind the shipped nftables rules, not pinned"
fi

# --- profile egressd ------------------------------------------------------------------
# Each workload runs for its time bound inside one 10-second CPU profile taken
# from egressd's admin listener; these sessions are not part of the tables.
profile_egressd() { # name kind scenarios [tool flags...]  (PROF_PROXY: the config, default egressd)
	local name=$1 kind=$2 scen=$3 curl_pid proxy=${PROF_PROXY:-egressd}
	shift 3
	log "profiling $proxy: $name"
	start_proxy "$proxy" "$kind" || return 0
	curl -s -o "$RESULTS/egressd-$name.pprof" "http://127.0.0.1:$P_EG_ADMIN/debug/pprof/profile?seconds=10" &
	curl_pid=$!
	STARTED+=("$curl_pid")
	record "taskset -c 1 $EB run -kind $kind -scenarios $scen $* (under pprof)"
	timeout --signal=INT 60 taskset -c 1 "$EB" run -kind "$kind" -label egressd-pprof -proxy "$PROXY_ADDR" \
		-proxy-pid "$PROXY_PID" -scenarios "$scen" -max-time 30s -pki "$PKI" "${ORIGINS[@]}" "$@" >>"$RESULTS/pprof-runs.log" 2>&1 || true
	wait "$curl_pid" || true
	stop_pid "$PROXY_PID"
	if [[ -s $RESULTS/egressd-$name.pprof ]]; then
		{
			printf '### %s: %s, %s, scenarios %s (go tool pprof -top -cum)\n\n' "$name" "$proxy" "$kind" "$scen"
			go tool pprof -top -cum -nodecount=45 "$SCRATCH/bin/egressd" "$RESULTS/egressd-$name.pprof" 2>/dev/null | sed -n '4,60p'
			printf '\n'
		} >>"$RESULTS/pprof.txt"
	fi
}
if [[ $PPROF == 1 ]] && [[ " ${ACTIVE[*]} " == *" egressd "* ]]; then
	: >"$RESULTS/pprof.txt"
	profile_egressd new-tunnels connect tunnels -tunnels 1000000 -tunnel-time 9s
	profile_egressd tls-tunnels connect tls_tunnels -tls-tunnels 1000000 -tls-time 9s
	profile_egressd bulk connect bulk_down_1,bulk_up_8 -bulk-bytes 68719476736 -bulk-time 4500ms
	profile_egressd forward http forward -fwd-requests 10000000 -fwd-time 9s
	profile_egressd cache-hits cache cache_hit_1k -cache-requests 100000000 -cache-time 9s
	profile_egressd inspect-sessions inspect inspect_sessions -inspect-sessions 1000000 -inspect-time 9s
	if [[ " ${ACTIVE[*]} " == *" egressd-dlp "* ]]; then
		PROF_PROXY=egressd-dlp profile_egressd dlp-post-1m http post_1m -post-requests-1m 1000000 -post-time 9s
	fi
fi

# --- report ------------------------------------------------------------------------------
{
	printf '\n# configs\n'
	for f in "$CONF/egressd/egressd.yaml" "$CONF/egressd-sysdns/egressd.yaml" "$CONF/egressd-sysdns/resolv.conf" "$CONF/egressd-chain/egressd.yaml" "$CONF/egressd-cache/egressd.yaml" "$CONF/squid/squid.conf" "$CONF/squid-cache/squid.conf" "$CONF/smokescreen/config.yaml" "$CONF/smokescreen/acl.yaml" "$CONF/dante/danted.conf" \
		"$CONF/egressd-dlp/egressd.yaml" "$CONF/egressd-icap/egressd.yaml" "$CONF/squid-icap/squid.conf" "$CONF/c-icap/c-icap.conf" \
		"$CONF/egressd-inspect/egressd.yaml" "$CONF/squid-bump/squid.conf"; do
		printf '\n# --- %s\n' "$f"
		cat "$f"
	done
} >>"$COMMANDS"
note "wall time of the run: $((SECONDS - START)) s"
log "writing $DOCS/benchmarks.md and $DOCS/benchmarks.svg"
mkdir -p "$DOCS"
"$EB" report -in "$RESULTS/*.json" -out "$DOCS/benchmarks.md" -svg "$DOCS/benchmarks.svg" \
	-meta "$META" -commands "$COMMANDS" -gobench "$RESULTS/gobench.txt" -pprof "$RESULTS/pprof.txt" -inline "$INLINE_OUT" \
	-notes docs/benchmarks-notes.md
log "done in $((SECONDS - START)) s: $DOCS/benchmarks.md, $DOCS/benchmarks.svg, raw results in $RESULTS"
