#!/bin/sh
# Turns a fresh private mount namespace into a test target host, then
# becomes its sshd. Run by the jms-e2e harness (src/target.rs) as
#   unshare -m --propagation private /bin/sh target-ns.sh DIR
# DIR holds etc/passwd, etc/group, etc/shadow (the host's entries plus the
# target's accounts), srv/ (homes, authorized keys and the marker files the
# tests inspect; shown as /srv), the host key and sshd_config. Nothing of
# the host changes: the mounts vanish with the namespace's last process.
set -eu
DIR=$1
mount --make-rprivate /
for f in passwd group shadow; do
    mount --bind "$DIR/etc/$f" "/etc/$f"
done
mount --bind "$DIR/srv" /srv
mount -t tmpfs -o mode=0755 jms-e2e-target-run /run
mkdir -m 0755 /run/sshd
echo "target-ns: starting sshd" >&2
exec /usr/sbin/sshd -D -e -f "$DIR/sshd_config"
