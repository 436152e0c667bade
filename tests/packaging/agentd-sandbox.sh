#!/bin/sh
# Runs jms-agentd inside the test chroot (no systemd there) under the parts
# of jms-agentd.service's sandbox that mounts and setpriv can reproduce,
# so the package test proves the daemon works within them:
#   ProtectSystem=strict    / read-only, except the unit's state, cache and
#                           runtime directories (/var/lib/jms, /var/cache/jms, /run/jms)
#   ProtectHome=yes         /root and /home empty and inaccessible
#   PrivateTmp=yes          a private /tmp and /var/tmp
#   NoNewPrivileges=yes     setpriv --no-new-privs
#   CapabilityBoundingSet=  the unit's six (setuid, setgid, kill, chown,
#                           fowner, dac_override), none inheritable or ambient
#   UMask=0077
# Not reproduced (systemd-only): the seccomp filter, DevicePolicy, and the
# Protect{Kernel*,ControlGroups,Clock,Hostname,Proc} settings.
# Run as: unshare -m --propagation private /bin/sh agentd-sandbox.sh [ARGS]
set -eu

mkdir -p /var/lib/jms /var/cache/jms /run/jms
chmod 0710 /var/lib/jms
chmod 0755 /var/cache/jms /run/jms
for dir in /var/lib/jms /var/cache/jms /run/jms; do
    mount --bind "$dir" "$dir"
done
mount -o remount,bind,ro /
mount -o remount,bind,ro /run
for dir in /root /home; do
    mount -t tmpfs -o mode=000 jms-protect-home "$dir"
done
mount -t tmpfs -o mode=1777 jms-private-tmp /tmp
mount -t tmpfs -o mode=1777 jms-private-tmp /var/tmp
umask 0077
# The capability list is read from the installed unit, so the test runs
# exactly what it grants.
caps=$(sed -n 's/^CapabilityBoundingSet=//p' /usr/lib/systemd/system/jms-agentd.service |
    tr 'A-Z' 'a-z' | sed 's/cap_/+/g; s/ /,/g')
exec setpriv --no-new-privs --bounding-set=-all${caps:+,$caps} --inh-caps=-all --ambient-caps=-all \
    -- /usr/sbin/jms-agentd --config /etc/jms/agentd.toml "$@"
