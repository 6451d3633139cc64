#!/bin/sh
# egressd-route-takeover run|handoff: the in-line gateways' routing
# (modules/egressd-inline). Installed by the module's user data as
# /usr/local/lib/egressd-inline/egressd-route-takeover and run by
# egressd-route-takeover.service, after egressd.
#
# The client subnets' route tables send their default route (0.0.0.0/0, and
# ::/0 with IPv6) to one gateway's network interface. Every gateway watches
# every table and points a table's default route at its own interface when
# the gateway it points at can no longer carry the traffic:
#
#   - the route is a blackhole (its interface is gone: the instance was
#     terminated): at once;
#   - the route's gateway failed EGRESSD_HEALTH_UNHEALTHY_THRESHOLD health
#     checks (its egressd's /readyz) in a row;
#   - the route is missing, or points at something that is not a gateway
#     (a NAT gateway from before the in-line gateways): at once for this
#     AZ's tables (this is the boot-time takeover), after the threshold for
#     other AZs' tables, so that each AZ's own gateway takes its tables first;
#   - the table is this AZ's and its gateway is a healthy one in another AZ
#     (it covered this AZ while this AZ had no gateway): traffic comes back
#     to its AZ.
#
# A table that points at a healthy gateway of its own AZ is left alone, so
# gateways of one AZ never fight over its tables. A gateway whose own egressd
# is not ready changes nothing. Worst-case detection of a failed gateway is
# threshold x (interval + timeout) seconds; docs/farm.md derives the failover
# time from it.
#
# run: turns off the source/destination check of this instance's interface
# (a gateway forwards packets that are not its own), then checks every
# EGRESSD_HEALTH_INTERVAL_SECONDS. When the Auto Scaling Group terminates
# this gateway (IMDS target-lifecycle-state "Terminated", held there by the
# module's lifecycle hook) it hands off and stops. When its own egressd has
# not been ready for the threshold's checks in a row, later than
# EGRESSD_SELF_GRACE_SECONDS after start, it marks itself unhealthy so that
# its group replaces it (and an instance refresh that brought it rolls back).
# handoff: points every table that points at this gateway at a healthy peer
# (one of the table's AZ if there is one), for a planned stop (scale-in,
# instance refresh, shutdown).
#
# Environment: EGRESSD_ROUTE_PLAN (one entry per AZ, separated by ";":
# "AZ rtb-1 rtb-2;AZ rtb-3"),
# EGRESSD_FARM_NAME and EGRESSD_FARM_TAG_KEY (the tag on the gateways'
# interfaces, default egressd-farm), EGRESSD_ROUTE_IPV6 (true: ::/0 too),
# EGRESSD_ADMIN_PORT (default 9090), EGRESSD_HEALTH_INTERVAL_SECONDS (5),
# EGRESSD_HEALTH_TIMEOUT_SECONDS (2), EGRESSD_HEALTH_UNHEALTHY_THRESHOLD (3),
# AWS_REGION, EGRESSD_IMDS_ENDPOINT (default http://169.254.169.254),
# EGRESSD_SELF_GRACE_SECONDS (default 300),
# EGRESSD_TAKEOVER_STATE (default /run/egressd-route-takeover),
# EGRESSD_TAKEOVER_PASSES (stop after this many checks; default 0, never).
set -eu

plan=$(printf '%s\n' "${EGRESSD_ROUTE_PLAN:?EGRESSD_ROUTE_PLAN is not set}" | tr ';' '\n')
farm=${EGRESSD_FARM_NAME:?EGRESSD_FARM_NAME is not set}
tag_key=${EGRESSD_FARM_TAG_KEY:-egressd-farm}
ipv6=${EGRESSD_ROUTE_IPV6:-false}
port=${EGRESSD_ADMIN_PORT:-9090}
interval=${EGRESSD_HEALTH_INTERVAL_SECONDS:-5}
timeout=${EGRESSD_HEALTH_TIMEOUT_SECONDS:-2}
threshold=${EGRESSD_HEALTH_UNHEALTHY_THRESHOLD:-3}
self_grace=${EGRESSD_SELF_GRACE_SECONDS:-300}
imds=${EGRESSD_IMDS_ENDPOINT:-http://169.254.169.254}
state=${EGRESSD_TAKEOVER_STATE:-/run/egressd-route-takeover}
passes=${EGRESSD_TAKEOVER_PASSES:-0}

dests="0.0.0.0/0"
[ "$ipv6" = true ] && dests="0.0.0.0/0 ::/0"
tables=$(printf '%s\n' "$plan" | awk '{ for (i = 2; i <= NF; i++) print $i }')
[ -n "$tables" ] || {
	echo "egressd-route-takeover: EGRESSD_ROUTE_PLAN names no route table" >&2
	exit 2
}

log() {
	echo "egressd-route-takeover: $*"
}

metadata() {
	token=$(curl -fsS -m 2 -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 60' "$imds/latest/api/token") || return 1
	curl -fsS -m 2 -H "X-aws-ec2-metadata-token: $token" "$imds/latest/meta-data/$1"
}

# ready HOST: that gateway's egressd answers /readyz with 200.
ready() {
	curl -fsS -o /dev/null -m "$timeout" "http://$1:$port/readyz" 2>/dev/null
}

# table_az RTB: the AZ whose line of the plan names RTB.
table_az() {
	printf '%s\n' "$plan" | awk -v t="$1" '{ for (i = 2; i <= NF; i++) if ($i == t) { print $1; exit } }'
}

# routes DEST: one line per table, "rtb interface state" for its DEST route
# ("None" for what it lacks: no route, or a target that is no interface).
routes() {
	field=DestinationCidrBlock
	[ "$1" = ::/0 ] && field=DestinationIpv6CidrBlock
	# shellcheck disable=SC2086 # a list of table IDs
	aws ec2 describe-route-tables --route-table-ids $tables \
		--query "RouteTables[].[RouteTableId, Routes[?$field=='$1'] | [0].NetworkInterfaceId, Routes[?$field=='$1'] | [0].State]" \
		--output text
}

# peer INTERFACE: "ip az" of a gateway's interface (cached: they never change).
peer() {
	if [ ! -s "$state/eni.$1" ]; then
		info=$(aws ec2 describe-network-interfaces --network-interface-ids "$1" \
			--query 'NetworkInterfaces[0].[PrivateIpAddress,AvailabilityZone]' --output text 2>/dev/null) || return 1
		# Text output separates the fields with a tab.
		echo $info >"$state/eni.$1"
	fi
	cat "$state/eni.$1"
}

# peer_ready INTERFACE: that gateway is healthy (probed once per pass).
peer_ready() {
	if [ ! -e "$state/probed.$1" ]; then
		if info=$(peer "$1") && ready "${info%% *}"; then
			echo ok >"$state/probed.$1"
		else
			echo failed >"$state/probed.$1"
		fi
	fi
	[ "$(cat "$state/probed.$1")" = ok ]
}

# failed KEY: counts one more failed check for KEY; true at the threshold.
failed() {
	count=$(($(cat "$state/failed.$1" 2>/dev/null || echo 0) + 1))
	echo "$count" >"$state/failed.$1"
	[ "$count" -ge "$threshold" ]
}

clear_failed() {
	rm -f "$state/failed.$1"
}

# point create|replace RTB DEST INTERFACE REASON
point() {
	if [ "$3" = ::/0 ]; then flag=--destination-ipv6-cidr-block; else flag=--destination-cidr-block; fi
	if aws ec2 "$1-route" --route-table-id "$2" "$flag" "$3" --network-interface-id "$4" >/dev/null; then
		log "$2 $3 -> $4: $5"
		return 0
	fi
	log "$1-route $2 $3 failed; the next check tries again"
	return 1
}

take() {
	point "$1" "$rtb" "$dest" "$eni" "$2 (now $instance in $az)" && clear_failed "$key" || true
}

# consider: one table's DEST route (rtb, dest, target, rstate, taz set).
consider() {
	key="$rtb.$(printf '%s' "$dest" | tr -c 'a-z0-9' _)"
	if [ "$target" = "$eni" ]; then
		clear_failed "$key"
		[ "$rstate" = blackhole ] && log "$rtb $dest points at this gateway but is a blackhole"
		return 0
	fi
	if [ "$target" = None ] && [ "$rstate" = None ]; then
		if [ "$taz" = "$az" ] || failed "$key"; then take create "no default route"; fi
		return 0
	fi
	if [ "$rstate" = blackhole ]; then
		take replace "$target is gone"
		return 0
	fi
	case $target in
	eni-*) ;;
	*)
		if [ "$taz" = "$az" ] || failed "$key"; then take replace "it pointed at no gateway"; fi
		return 0
		;;
	esac
	if peer_ready "$target"; then
		clear_failed "$key"
		info=$(peer "$target")
		if [ "$taz" = "$az" ] && [ "${info#* }" != "$az" ]; then
			take replace "back to its AZ from $target in ${info#* }"
		fi
		return 0
	fi
	if failed "$key"; then
		take replace "$target failed $threshold health checks"
	fi
}

check() {
	if [ "$(metadata autoscaling/target-lifecycle-state 2>/dev/null || true)" = Terminated ]; then
		log "check $1: this gateway is being terminated; handing its route tables off"
		handoff || true
		exit 0
	fi
	if ! ready 127.0.0.1; then
		log "check $1: this gateway's egressd is not ready; no route changes"
		if failed self && [ $(($(date +%s) - started)) -ge "$self_grace" ] && [ ! -e "$state/reported" ]; then
			if aws autoscaling set-instance-health --instance-id "$instance" --health-status Unhealthy; then
				touch "$state/reported"
				log "marked $instance unhealthy: its egressd has not been ready for $threshold checks"
			fi
		fi
		return 0
	fi
	clear_failed self
	rm -f "$state"/probed.*
	for dest in $dests; do
		if ! routes "$dest" >"$state/routes"; then
			log "check $1: describe-route-tables failed"
			return 0
		fi
		while read -r rtb target rstate <&3; do
			[ -n "$rtb" ] || continue
			taz=$(table_az "$rtb")
			consider
		done 3<"$state/routes"
	done
}

run() {
	started=$(date +%s)
	aws ec2 modify-network-interface-attribute --network-interface-id "$eni" --no-source-dest-check
	log "$instance ($eni in $az): source/destination check off; watching$(printf ' %s' $tables)"
	n=0
	while :; do
		n=$((n + 1))
		check "$n"
		if [ "$passes" -gt 0 ] && [ "$n" -ge "$passes" ]; then
			break
		fi
		sleep "$interval"
	done
}

handoff() {
	aws ec2 describe-network-interfaces --filters "Name=tag:$tag_key,Values=$farm" Name=status,Values=in-use \
		--query 'NetworkInterfaces[].[NetworkInterfaceId,PrivateIpAddress,AvailabilityZone]' --output text >"$state/peers" ||
		{
			log "handoff: cannot list the gateways"
			return 1
		}
	for dest in $dests; do
		routes "$dest" >"$state/routes" || {
			log "handoff: describe-route-tables failed"
			return 1
		}
		while read -r rtb target rstate <&3; do
			[ "$target" = "$eni" ] || continue
			taz=$(table_az "$rtb")
			to=
			# A healthy peer of the table's AZ first, then any healthy peer.
			for pass in same any; do
				while read -r peer_eni peer_ip peer_az <&4; do
					[ "$peer_eni" != "$eni" ] && [ -z "$to" ] || continue
					[ $pass = any ] || [ "$peer_az" = "$taz" ] || continue
					if ready "$peer_ip"; then to=$peer_eni; fi
				done 4<"$state/peers"
			done
			if [ -z "$to" ]; then
				log "handoff: no healthy gateway to take $rtb $dest; it stays with this one"
				continue
			fi
			point replace "$rtb" "$dest" "$to" "handed off by $instance" || true
		done 3<"$state/routes"
	done
}

mkdir -p "$state"
instance=$(metadata instance-id) && az=$(metadata placement/availability-zone) &&
	mac=$(metadata mac) && eni=$(metadata "network/interfaces/macs/$mac/interface-id") || {
	log "cannot read this instance's identity from $imds"
	exit 1
}

case ${1:-} in
run) run ;;
handoff) handoff ;;
*)
	echo "usage: egressd-route-takeover run|handoff" >&2
	exit 2
	;;
esac
