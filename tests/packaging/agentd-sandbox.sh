#!/bin/sh
# Runs jms-agentd inside the test chroot (no systemd there) under the parts
# of jms-agentd.service's sandbox that mounts and setpriv can reproduce,
# so the package test proves the daemon works within them:
#   ProtectSystem=strict    / read-only, except the unit's state, cache and
#                           runtime directories (/var/lib/jms, /var/cache/jms, /run/jms)
#   ProtectHome=yes         /root and /home empty and inaccessible
#   PrivateTmp=yes          a private /tmp and /var/tmp
#   NoNewPrivileges=yes     setpriv --no-new-privs
#   CapabilityBoundingSet=  no capabilities (bounding, inheritable, ambient)
#   UMask=0077
# Not reproduced (systemd-only): the seccomp filter, DevicePolicy, and the
# Protect{Kernel*,ControlGroups,Clock,Hostname,Proc} settings.
# Run as: unshare -m --propagation private /bin/sh agentd-sandbox.sh [ARGS]
set -eu

mkdir -p /var/lib/jms /var/cache/jms /run/jms
chmod 0700 /var/lib/jms
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
exec setpriv --no-new-privs --bounding-set=-all --inh-caps=-all --ambient-caps=-all \
    -- /usr/sbin/jms-agentd --config /etc/jms/agentd.toml "$@"
