#!/bin/sh
# Rolls the farm's per-AZ Auto Scaling groups to a launch template version,
# one AZ at a time. Run by Terraform (terraform_data.rollout) when the farm's
# release changes, or by hand with the module's output rollout_command.
#
# For each group in the plan, in order:
#   - skip it if it already runs the version (a new farm, or a re-run after a
#     partial rollout);
#   - start an instance refresh whose desired configuration is the version,
#     with the plan's preferences (checkpoints, automatic rollback on failed
#     health checks and on the AZ's unhealthy-targets alarm, instances already
#     on the version skipped); the group takes the version only when the
#     refresh succeeds, so a rollback returns it to the version it ran;
#   - wait for the refresh to end. Anything but success stops the rollout
#     with an error, and the AZs after it keep their version. A refresh that
#     outlasts EGRESSD_ROLLOUT_TIMEOUT_SECONDS is rolled back.
#
# Environment:
#   EGRESSD_ROLLOUT_TEMPLATE_ID       launch template ID
#   EGRESSD_ROLLOUT_TEMPLATE_VERSION  version to roll out
#   EGRESSD_ROLLOUT_PLAN              lines "<group name> <preferences JSON>"
#   EGRESSD_ROLLOUT_TIMEOUT_SECONDS   per group (default 7200)
#   EGRESSD_ROLLOUT_POLL_SECONDS      status poll interval (default 30)
#   AWS_REGION and credentials for the AWS CLI v2
set -eu

template=${EGRESSD_ROLLOUT_TEMPLATE_ID:?EGRESSD_ROLLOUT_TEMPLATE_ID is not set}
version=${EGRESSD_ROLLOUT_TEMPLATE_VERSION:?EGRESSD_ROLLOUT_TEMPLATE_VERSION is not set}
plan=${EGRESSD_ROLLOUT_PLAN:?EGRESSD_ROLLOUT_PLAN is not set}
timeout=${EGRESSD_ROLLOUT_TIMEOUT_SECONDS:-7200}
poll=${EGRESSD_ROLLOUT_POLL_SECONDS:-30}

log() {
	echo "egressd-rollout: $*"
}

if ! command -v aws >/dev/null 2>&1; then
	log "the AWS CLI (v2) is needed to roll out launch template $template version $version; install it, or set instance_refresh_on_apply = false and run the output rollout_command where it is" >&2
	exit 1
fi

desired="{\"LaunchTemplate\":{\"LaunchTemplateId\":\"$template\",\"Version\":\"$version\"}}"

# refresh GROUP PREFERENCES: one AZ's refresh, to its end.
refresh() {
	group=$1
	preferences=$2

	current=$(aws autoscaling describe-auto-scaling-groups --auto-scaling-group-names "$group" \
		--query 'AutoScalingGroups[0].LaunchTemplate.Version' --output text) || {
		log "$group: cannot read its launch template version" >&2
		return 1
	}
	if [ "$current" = "$version" ]; then
		log "$group already runs launch template version $version"
		return 0
	fi

	id=$(aws autoscaling start-instance-refresh --auto-scaling-group-name "$group" --strategy Rolling \
		--desired-configuration "$desired" --preferences "$preferences" \
		--query InstanceRefreshId --output text) || {
		log "$group: cannot start an instance refresh" >&2
		return 1
	}
	log "$group: instance refresh $id from version $current to $version"

	waited=0
	while :; do
		status=$(aws autoscaling describe-instance-refreshes --auto-scaling-group-name "$group" \
			--instance-refresh-ids "$id" \
			--query 'InstanceRefreshes[0].[Status,PercentageComplete,StatusReason]' --output text) ||
			status="unknown	?	cannot read the refresh's status"
		state=$(echo "$status" | cut -f1)
		case $state in
		Successful)
			log "$group: refresh $id succeeded"
			return 0
			;;
		Failed | Cancelled | RollbackSuccessful | RollbackFailed)
			log "$group: refresh $id ended $state: $(echo "$status" | cut -f3-)" >&2
			return 1
			;;
		esac
		if [ "$waited" -ge "$timeout" ]; then
			log "$group: refresh $id still $state after ${timeout}s: rolling it back" >&2
			aws autoscaling rollback-instance-refresh --auto-scaling-group-name "$group" >/dev/null || true
			return 1
		fi
		log "$group: $state, $(echo "$status" | cut -f2)% replaced"
		sleep "$poll"
		waited=$((waited + poll))
	done
}

azs=0
while read -r group preferences; do
	[ -n "$group" ] || continue
	azs=$((azs + 1))
	if ! refresh "$group" "$preferences"; then
		log "rollout of version $version stopped at $group; the groups after it keep their version" >&2
		exit 1
	fi
done <<EOF
$plan
EOF

log "launch template $template version $version is out ($azs groups)"
