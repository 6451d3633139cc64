#!/bin/sh
# egressd client settings: send this instance's HTTP and HTTPS traffic through
# the egressd farm, for login shells and systemd services alike.
#
# Use it as (part of) the user data of client instances, whose subnets have no
# route to the internet. It writes:
#   /etc/profile.d/egressd-proxy.sh                  login shells
#   /etc/systemd/system.conf.d/egressd-proxy.conf    DefaultEnvironment= of every systemd service
#   /etc/environment                                 PAM sessions (block between markers)
# and applies the settings to the running systemd manager. Running it again
# rewrites the same content: it is idempotent.
#
# Operator settings. Edit the defaults here, or set the variables before this
# script runs (the example Terraform prepends them).
#
# EGRESSD_PROXY_URL        the farm's HTTP proxy: http://<NLB or private DNS name>:3128
# EGRESSD_VPC_CIDR         the VPC's CIDR(s), comma-separated: reached directly
# EGRESSD_AWS_REGION       the region: adds the S3 and DynamoDB names that the
#                          VPC's gateway endpoints serve directly ("" to skip)
# EGRESSD_ENDPOINT_DNS_NAMES
#                          DNS names served by VPC interface endpoints (PrivateLink)
#                          in this VPC, space- or comma-separated, for example
#                          "ssm.eu-west-1.amazonaws.com ssmmessages.eu-west-1.amazonaws.com .vpce.amazonaws.com".
#                          The proxy is bypassed for them; names not listed go
#                          through egressd and need a rule there.
# EGRESSD_RESTART_UNITS    units started before this script that should pick up
#                          the proxy now, for example "amazon-ssm-agent.service"
# EGRESSD_CLIENT_ROOT      write below this directory instead of / and leave the
#                          running system alone (image builds and tests)
: "${EGRESSD_PROXY_URL:=http://proxy.egress.internal:3128}"
: "${EGRESSD_VPC_CIDR:=10.0.0.0/16}"
: "${EGRESSD_AWS_REGION:=}"
: "${EGRESSD_ENDPOINT_DNS_NAMES:=}"
: "${EGRESSD_RESTART_UNITS:=}"
: "${EGRESSD_CLIENT_ROOT:=}"

# No pathname expansion: the endpoint names are split on spaces only.
set -euf

fail() {
	echo "egressd-client: $*" >&2
	exit 1
}

# Values end up in shell, systemd and pam_env syntax: allow only characters
# that need no quoting in any of them.
check_value() {
	case "$2" in
	*[!A-Za-z0-9.,:/_-]*) fail "$1 contains characters other than letters, digits and .,:/_-: $2" ;;
	esac
}

case "$EGRESSD_PROXY_URL" in
http://?*) ;;
*) fail "EGRESSD_PROXY_URL must be http://host:port, got '$EGRESSD_PROXY_URL'" ;;
esac
check_value EGRESSD_PROXY_URL "$EGRESSD_PROXY_URL"

# NO_PROXY: instance metadata (169.254.169.254), the ECS task metadata and
# credentials endpoint (169.254.170.2), loopback, the VPC itself, names under
# .internal (EC2 private DNS), the gateway-endpoint services and the operator's
# interface endpoints. curl, Go, Python requests and the AWS SDKs accept CIDRs here.
no_proxy="localhost,127.0.0.1,::1,169.254.169.254,169.254.170.2,$EGRESSD_VPC_CIDR,.internal"
if [ -n "$EGRESSD_AWS_REGION" ]; then
	r=$EGRESSD_AWS_REGION
	no_proxy="$no_proxy,s3.$r.amazonaws.com,.s3.$r.amazonaws.com,dynamodb.$r.amazonaws.com"
fi
for name in $(echo "$EGRESSD_ENDPOINT_DNS_NAMES" | tr ',' ' '); do
	no_proxy="$no_proxy,$name"
done
check_value NO_PROXY "$no_proxy"

proxy=$EGRESSD_PROXY_URL
root=$EGRESSD_CLIENT_ROOT
vars="HTTP_PROXY HTTPS_PROXY http_proxy https_proxy NO_PROXY no_proxy"

value_of() {
	case "$1" in
	NO_PROXY | no_proxy) echo "$no_proxy" ;;
	*) echo "$proxy" ;;
	esac
}

# write FILE MODE: replace FILE with stdin atomically.
write() {
	mkdir -p "$(dirname "$1")"
	cat >"$1.egressd-tmp"
	chmod "$2" "$1.egressd-tmp"
	mv -f "$1.egressd-tmp" "$1"
}

# Login shells.
{
	echo "# Managed by the egressd client user data: proxy settings for login shells."
	for v in $vars; do
		echo "export $v=$(value_of "$v")"
	done
} | write "$root/etc/profile.d/egressd-proxy.sh" 0644

# Every systemd service started from now on (and after each boot).
{
	echo "# Managed by the egressd client user data: proxy settings for systemd services."
	echo "[Manager]"
	printf 'DefaultEnvironment='
	sep=
	for v in $vars; do
		printf '%s"%s=%s"' "$sep" "$v" "$(value_of "$v")"
		sep=' '
	done
	echo
} | write "$root/etc/systemd/system.conf.d/egressd-proxy.conf" 0644

# PAM sessions (ssh, su, cron) read /etc/environment: replace our block.
envfile=$root/etc/environment
begin="# BEGIN egressd proxy (managed by the egressd client user data)"
end="# END egressd proxy"
mkdir -p "$root/etc"
touch "$envfile"
{
	sed "/^# BEGIN egressd proxy/,/^# END egressd proxy/d" "$envfile"
	echo "$begin"
	for v in $vars; do
		echo "$v=$(value_of "$v")"
	done
	echo "$end"
} | write "$envfile" 0644

# Apply to the running manager without a reboot: new services get the
# variables now; the drop-in above keeps them after reboots.
if [ -z "$root" ] && [ -d /run/systemd/system ]; then
	for v in $vars; do
		systemctl set-environment "$v=$(value_of "$v")"
	done
	for unit in $EGRESSD_RESTART_UNITS; do
		systemctl try-restart "$unit"
	done
fi

echo "egressd-client: proxy $proxy, no proxy for $no_proxy"
