#!/bin/sh
# Turns a fresh private mount namespace into a jms bastion, then becomes sshd.
#
# Run by the jms-e2e harness as
#   unshare -m --propagation private /bin/sh bastion-ns.sh DIR LIBDIR AGENTD AGENT
# (AGENTD and AGENT are `-` for the harness's own check without jms: sshd with
# local accounts only).
# DIR is the test's directory, prepared by the harness:
#   etc/nsswitch.conf, etc/pam.d/sshd   bound over the host's files
#   etc/passwd, etc/group, etc/shadow   bound over the host's files when present
#                                        (private local accounts, and with jms the
#                                        session workers' user jms-session)
#   lib/libnss_jms.so.2                 shown in LIBDIR through a read-only overlay
#   varlib/jms/ (empty)                 shown in /var/lib through a read-only overlay,
#   state/                              then bound on /var/lib/jms (agentd's private state)
#   varcache/jms/ (empty)               shown in /var/cache through a read-only overlay,
#   cache/                              then bound on /var/cache/jms (the public NSS cache)
#   agentd.toml, sshd_config
# Everything here happens in the private namespace: the host's mounts and
# /etc are never touched, and the mounts vanish with the namespace's last process.
# Output: sshd's log (and this script's messages) on stderr, jms-agentd's in DIR/agentd.log.
set -eu

DIR=$1
LIBDIR=$2
AGENTD=$3
AGENT=$4

say() { echo "bastion-ns: $*" >&2; }

mount --make-rprivate /

mount --bind "$DIR/etc/nsswitch.conf" /etc/nsswitch.conf
mount --bind "$DIR/etc/pam.d/sshd" /etc/pam.d/sshd
for f in passwd group shadow; do
    if [ -f "$DIR/etc/$f" ]; then
        mount --bind "$DIR/etc/$f" "/etc/$f"
    fi
done

# glibc dlopens libnss_jms.so.2 from its library directory (LD_LIBRARY_PATH
# is ignored for setuid helpers): show it there without writing there.
if [ -f "$DIR/lib/libnss_jms.so.2" ]; then
    mount -t overlay jms-e2e-lib -o "ro,lowerdir=$DIR/lib:$LIBDIR" "$LIBDIR"
fi

# agentd keeps its private state in /var/lib/jms (0700); the NSS module
# reads the fixed path /var/cache/jms/nss.db.
mount -t overlay jms-e2e-varlib -o "ro,lowerdir=$DIR/varlib:/var/lib" /var/lib
mount --bind "$DIR/state" /var/lib/jms
mount -t overlay jms-e2e-varcache -o "ro,lowerdir=$DIR/varcache:/var/cache" /var/cache
mount --bind "$DIR/cache" /var/cache/jms

# A private /run: sshd's privsep dir, agentd's socket dir, and the agent
# binary on a root-owned path (sshd checks AuthorizedKeysCommand's path).
mount -t tmpfs -o mode=0755 jms-e2e-run /run
mkdir -m 0755 /run/sshd
mkdir -p -m 0755 /run/jms-e2e/bin
if [ "$AGENTD" = - ]; then
    say "no jms: starting sshd alone"
    exec /usr/sbin/sshd -D -e -f "$DIR/sshd_config"
fi
cp "$AGENT" /run/jms-e2e/bin/jms-agent
chmod 0755 /run/jms-e2e/bin/jms-agent

"$AGENTD" --config "$DIR/agentd.toml" </dev/null >>"$DIR/agentd.log" 2>&1 &
echo $! >"$DIR/agentd.pid"
say "jms-agentd started as pid $!"

tries=0
while [ ! -S /run/jms/agentd.sock ]; do
    if ! kill -0 "$(cat "$DIR/agentd.pid")" 2>/dev/null; then
        say "jms-agentd exited before creating /run/jms/agentd.sock (see agentd.log)"
        exit 1
    fi
    tries=$((tries + 1))
    if [ "$tries" -gt 300 ]; then
        say "jms-agentd did not create /run/jms/agentd.sock within 15 s"
        exit 1
    fi
    sleep 0.05
done
say "jms-agentd is ready; starting sshd"

exec /usr/sbin/sshd -D -e -f "$DIR/sshd_config"
