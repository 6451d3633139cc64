#!/bin/sh
# egressd postrm (nfpm scripts.postremove). dpkg runs it as `postrm remove`,
# `postrm purge`, `postrm upgrade <new-version>` and others.
#
# remove: tells systemd that the unit files are gone. purge: also removes what
# egressd's helpers created at run time (the config staging directory, the
# policy sync state). The egressd user and group stay, as Debian recommends,
# so that files they own never end up with a reused ID.
set -e

case "$1" in
remove | purge)
	if [ -d "${DPKG_ROOT:-}/run/systemd/system" ]; then
		systemctl daemon-reload || true
	fi
	;;
esac

if [ "$1" = purge ]; then
	rm -rf "${DPKG_ROOT:-}/etc/egressd/.staging" "${DPKG_ROOT:-}/var/lib/egressd-policy-sync"
	rm -f "${DPKG_ROOT:-}/etc/default/egressd-policy-sync"
	rmdir "${DPKG_ROOT:-}/etc/egressd" 2>/dev/null || true
fi

exit 0
