#!/bin/sh
# egressd postinst (nfpm scripts.postinstall). dpkg runs it as
# `postinst configure [<old-version>]`; the old version is empty on a fresh
# install. It honours DPKG_ROOT (dpkg --root) for the paths it checks.
#
# - creates the system group and user egressd (no home, no shell);
# - makes /etc/egressd readable by egressd only (root:egressd, 0750/0640);
# - fresh install: enables egressd.service but does not start it: the
#   packaged example policy is not the operator's, and it listens on all
#   interfaces. The operator (or the farm's user data) installs the real
#   policy first, then starts the service;
# - upgrade: reloads units, reloads the in-line gateway's rules if they are
#   loaded, and restarts egressd if it was running (it drains on SIGTERM);
#   an operator's "disable" is kept. egressd-transparent.service is never
#   enabled by the package: only an in-line gateway's set-up does that.
set -e

# abort-upgrade, abort-remove, abort-deconfigure: nothing was changed yet.
case "$1" in
configure) ;;
*) exit 0 ;;
esac
old_version=${2:-}

if ! getent group egressd >/dev/null; then
	groupadd --system egressd
fi
if ! getent passwd egressd >/dev/null; then
	useradd --system --gid egressd --home-dir /nonexistent --no-create-home \
		--shell /usr/sbin/nologin --comment "egressd egress proxy" egressd
fi

conf_dir=${DPKG_ROOT:-}/etc/egressd
chown root:egressd "$conf_dir"
chmod 0750 "$conf_dir"
if [ -f "$conf_dir/egressd.yaml" ]; then
	chown root:egressd "$conf_dir/egressd.yaml"
	chmod 0640 "$conf_dir/egressd.yaml"
fi

systemd_running() {
	[ -d "${DPKG_ROOT:-}/run/systemd/system" ]
}

if systemd_running; then
	systemctl daemon-reload
fi

if [ -z "$old_version" ]; then
	# Fresh install. `systemctl enable` only writes symlinks: it works in
	# chroots and image builds too.
	systemctl enable egressd.service >/dev/null 2>&1 || echo "egressd: could not enable egressd.service" >&2
	echo "egressd: installed and enabled; put your policy in /etc/egressd/egressd.yaml, then: systemctl start egressd" >&2
elif systemd_running; then
	# The in-line gateway's rules first, replaced in one transaction (reload),
	# so that the restarted egressd finds the new ones.
	systemctl try-reload-or-restart egressd-transparent.service || echo "egressd: egressd-transparent.service did not reload: see journalctl -u egressd-transparent" >&2
	systemctl try-restart egressd.service || echo "egressd: egressd.service did not restart: see journalctl -u egressd" >&2
fi

exit 0
