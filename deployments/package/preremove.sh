#!/bin/sh
# egressd prerm (nfpm scripts.preremove). dpkg runs it as `prerm remove`,
# `prerm upgrade <new-version>` or `prerm deconfigure ...`.
#
# remove: stops egressd (it drains on SIGTERM), the farm helpers and the
# in-line gateway's rules (forwarding off first: nothing is routed through
# unfiltered), and disables them. upgrade: leaves egressd running; the new postinst restarts it.
set -e

units="egressd-asg-drain.service egressd-policy-sync.timer egressd-policy-sync.service egressd.service egressd-transparent.service"

case "$1" in
remove | deconfigure)
	if [ -d "${DPKG_ROOT:-}/run/systemd/system" ]; then
		# shellcheck disable=SC2086 # a list of unit names
		systemctl stop $units || true
	fi
	# shellcheck disable=SC2086
	systemctl disable $units >/dev/null 2>&1 || true
	;;
upgrade | failed-upgrade) ;;
esac

exit 0
