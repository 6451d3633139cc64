#!/bin/sh
# egressd-eip claim|release: this instance's egress address from the farm's
# pool of Elastic IPs (egress_mode elastic_ip). Installed by the farm's user
# data as /usr/local/lib/egressd-farm/egressd-eip and run by
# egressd-eip.service: claim before egressd starts, release at shutdown.
#
# claim: keep the pool address this instance already holds, or associate a
# free one (shuffled, so that instances booting together rarely race; an
# address taken meanwhile is refused by --no-allow-reassociation and the next
# is tried). The association replaces the public address the instance was
# launched with, which can cut the very API call that made it: success is
# read back from describe-addresses, not from the call's answer.
# release: disassociate the pool address this instance holds.
#
# Environment: EGRESSD_EIP_POOL (the pool tag's value: the farm's name),
# EGRESSD_EIP_POOL_TAG_KEY (default egressd-pool), AWS_REGION,
# EGRESSD_IMDS_ENDPOINT (default http://169.254.169.254),
# EGRESSD_EIP_ATTEMPTS (default 30), EGRESSD_EIP_RETRY_SECONDS (default 5).
set -eu

pool=${EGRESSD_EIP_POOL:?EGRESSD_EIP_POOL is not set}
tag_key=${EGRESSD_EIP_POOL_TAG_KEY:-egressd-pool}
imds=${EGRESSD_IMDS_ENDPOINT:-http://169.254.169.254}
attempts=${EGRESSD_EIP_ATTEMPTS:-30}
retry=${EGRESSD_EIP_RETRY_SECONDS:-5}

log() {
	echo "egressd-eip: $*"
}

instance_id() {
	token=$(curl -fsS -m 2 -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 60' "$imds/latest/api/token") || return 1
	curl -fsS -m 2 -H "X-aws-ec2-metadata-token: $token" "$imds/latest/meta-data/instance-id"
}

# pool_addresses QUERY FILTER...: a JMESPath query over the pool's addresses,
# as words ("None" and empty answers become nothing).
pool_addresses() {
	query=$1
	shift
	out=$(aws ec2 describe-addresses --filters "Name=tag:$tag_key,Values=$pool" "$@" --query "$query" --output text) || return 1
	for word in $out; do
		[ "$word" = None ] || echo "$word"
	done
}

held() {
	pool_addresses 'Addresses[].AllocationId' "Name=instance-id,Values=$instance"
}

claim() {
	n=0
	while [ "$n" -lt "$attempts" ]; do
		n=$((n + 1))
		if mine=$(held) && [ -n "$mine" ]; then
			log "instance $instance holds $mine from pool $pool"
			return 0
		fi
		free=$(pool_addresses 'Addresses[?AssociationId==null].AllocationId') || free=
		if [ -z "$free" ]; then
			log "no free address in pool $pool (attempt $n of $attempts)"
		fi
		for allocation in $(printf '%s\n' $free | shuf); do
			if aws ec2 associate-address --allocation-id "$allocation" --instance-id "$instance" --no-allow-reassociation >/dev/null 2>&1; then
				:
			fi
			# Read back whatever the call's answer was (see above).
			if mine=$(held) && [ -n "$mine" ]; then
				log "instance $instance claimed $mine from pool $pool"
				return 0
			fi
			log "$allocation was taken; trying the next address"
		done
		sleep "$retry"
	done
	log "gave up: no address of pool $pool after $attempts attempts"
	return 1
}

release() {
	# Short timeouts and no retries: the answer may not come back once the
	# address is gone, and EC2 releases it at termination anyway.
	associations=$(pool_addresses 'Addresses[].AssociationId' "Name=instance-id,Values=$instance") || associations=
	for association in $associations; do
		AWS_MAX_ATTEMPTS=1 aws ec2 disassociate-address --association-id "$association" \
			--cli-connect-timeout 5 --cli-read-timeout 10 >/dev/null 2>&1 || true
		log "released $association of instance $instance"
	done
}

instance=$(instance_id) || {
	log "cannot read the instance ID from $imds"
	exit 1
}

case ${1:-} in
claim) claim ;;
release) release ;;
*)
	echo "usage: egressd-eip claim|release" >&2
	exit 2
	;;
esac
