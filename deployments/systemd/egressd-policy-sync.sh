#!/bin/sh
# egressd policy sync: pull the egressd config from S3 and swap it in when it
# changed. Installed as /usr/lib/egressd/policy-sync and run by
# egressd-policy-sync.service (timer) and by the farm's user data at boot.
#
# Environment (from /etc/default/egressd-policy-sync):
#   EGRESSD_CONFIG_URI   s3://bucket/key of the complete egressd.yaml (required)
#   AWS_REGION           region of the bucket
#   EGRESSD_CONFIG_DIR   config directory (default /etc/egressd)
#
# The download goes to a staging directory inside the config directory, so the
# final rename is atomic (same filesystem) and egressd's watch on the config
# directory sees one event for the finished file, never a partial one. A file
# that `egressd validate` rejects is not installed: the running config stays.
set -eu

: "${EGRESSD_CONFIG_URI:?EGRESSD_CONFIG_URI is not set (see /etc/default/egressd-policy-sync)}"
conf_dir=${EGRESSD_CONFIG_DIR:-/etc/egressd}
target=$conf_dir/egressd.yaml
staging=$conf_dir/.staging

mkdir -p "$staging"
chmod 0750 "$staging"
tmp=$staging/egressd.yaml.$$
trap 'rm -f "$tmp"' EXIT

aws s3 cp --only-show-errors "$EGRESSD_CONFIG_URI" "$tmp"

if [ -f "$target" ] && cmp -s "$tmp" "$target"; then
	exit 0
fi

if ! egressd validate --config "$tmp"; then
	echo "policy-sync: $EGRESSD_CONFIG_URI does not validate; keeping $target" >&2
	exit 1
fi

chown root:egressd "$tmp"
chmod 0640 "$tmp"
mv -f "$tmp" "$target"
sum=$(sha256sum "$target" | cut -d ' ' -f 1)
echo "policy-sync: installed $EGRESSD_CONFIG_URI as $target (sha256 $sum)"

# egressd also reloads on the file change; SIGHUP makes it independent of the
# file watch. A stopped egressd reads the new file when it starts.
if systemctl is-active --quiet egressd.service; then
	systemctl reload egressd.service
fi
