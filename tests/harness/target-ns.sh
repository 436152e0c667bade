#!/bin/sh
# Turns a fresh private mount namespace into a test target host, then
# becomes its sshd. Run by the jms-e2e harness (src/target.rs) as
#   unshare -m --propagation private /bin/sh target-ns.sh DIR
# DIR holds etc/ (passwd, group, shadow — the host's entries plus the
# target's accounts — and sudoers.d/), srv/ (homes, authorized keys and
# the marker files the tests inspect; shown as /srv), home/ (shown as
# /home, where useradd puts new homes), the host key and sshd_config.
# /etc is an overlay whose upper layer is DIR/etc: what the target's
# useradd, chpasswd or visudo write lands there, never in the host's /etc;
# /var/log and /var/mail are private tmpfs. Nothing of the host changes:
# the mounts vanish with the namespace's last process.
set -eu
DIR=$1
mount --make-rprivate /
mkdir -p "$DIR/etc-work" "$DIR/home"
mount -t overlay jms-e2e-target-etc \
    -o "lowerdir=/etc,upperdir=$DIR/etc,workdir=$DIR/etc-work" /etc
mount --bind "$DIR/srv" /srv
mount --bind "$DIR/home" /home
mount -t tmpfs -o mode=0755 jms-e2e-target-log /var/log
[ -d /var/mail ] && mount -t tmpfs -o mode=2775 jms-e2e-target-mail /var/mail
mount -t tmpfs -o mode=0755 jms-e2e-target-run /run
mkdir -m 0755 /run/sshd
echo "target-ns: starting sshd" >&2
exec /usr/sbin/sshd -D -e -f "$DIR/sshd_config"
