#!/bin/sh
# egressd Auto Scaling drain watcher. Installed as /usr/lib/egressd/asg-drain
# and run by egressd-asg-drain.service on farm instances.
#
# Polls the instance metadata service (IMDSv2) for the instance's Auto Scaling
# target lifecycle state. When it reads "Terminated" (the instance entered
# Terminating:Wait of the termination lifecycle hook), it stops egressd, which
# drains: /readyz turns 503, the listeners close after timeouts.drain_delay,
# and in-flight work gets up to timeouts.drain. The hook's heartbeat outlasts
# that, then termination continues.
#
# Environment: EGRESSD_IMDS_ENDPOINT (default http://169.254.169.254),
# EGRESSD_DRAIN_POLL_SECONDS (default 5).
set -u

imds=${EGRESSD_IMDS_ENDPOINT:-http://169.254.169.254}
interval=${EGRESSD_DRAIN_POLL_SECONDS:-5}

lifecycle_state() {
	token=$(curl -fsS -m 2 -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 60' "$imds/latest/api/token") || return 1
	curl -fsS -m 2 -H "X-aws-ec2-metadata-token: $token" "$imds/latest/meta-data/autoscaling/target-lifecycle-state"
}

while :; do
	if state=$(lifecycle_state 2>/dev/null) && [ "$state" = Terminated ]; then
		echo "asg-drain: instance is terminating: stopping egressd.service (drain)"
		systemctl stop egressd.service
		echo "asg-drain: egressd.service stopped"
		exit 0
	fi
	sleep "$interval"
done
