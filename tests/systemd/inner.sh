#!/bin/bash
# PID 1 of fresh pid/mount/uts/ipc/net/cgroup namespaces (see tests/sysd.py): give
# systemd a private /run, /dev, /etc, /opt, /var and cgroup trees, then exec it.
# Nothing here writes outside $1, the harness's work directory.
set -euo pipefail
W=$1
export LIBMOUNT_UTAB=$W/utab

ip link set lo up
mount -t tmpfs -o mode=755 tmpfs /run
for d in etc opt var; do
  mkdir -p "$W/upper/$d" "$W/work/$d" "/$d"
  mount -t overlay overlay -o "lowerdir=/$d,upperdir=$W/upper/$d,workdir=$W/work/$d" "/$d"
done
mount -t tmpfs -o mode=755 tmpfs /etc/systemd/system

# A /dev of its own: nothing (a /dev/log symlink, say) lands in the host's.
mkdir -p "$W/hostdev"
mount --bind /dev "$W/hostdev"
mount -t tmpfs -o mode=755,nosuid tmpfs /dev
for n in null zero full random urandom tty; do
  touch "/dev/$n"
  mount --bind "$W/hostdev/$n" "/dev/$n"
done
mkdir -p /dev/pts /dev/shm
mount -t devpts -o newinstance,ptmxmode=0666 devpts /dev/pts
ln -s pts/ptmx /dev/ptmx
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
ln -s /proc/self/fd /dev/fd
ln -s /proc/self/fd/0 /dev/stdin; ln -s /proc/self/fd/1 /dev/stdout; ln -s /proc/self/fd/2 /dev/stderr
umount -l "$W/hostdev"
touch /dev/console "$W/console.log"
mount --bind "$W/console.log" /dev/console  # what systemd prints as PID 1

mount --bind /proc/sys /proc/sys
mount -o remount,bind,ro /proc/sys
mount --rbind /sys /sys
mount -o remount,bind,ro /sys
mount -t tmpfs -o mode=755 tmpfs /sys/fs/cgroup
mkdir /sys/fs/cgroup/unified /sys/fs/cgroup/systemd
mount -t cgroup2 cgroup2 /sys/fs/cgroup/unified
mount -t cgroup -o none,name=systemd cgroup /sys/fs/cgroup/systemd
# The v1 controllers the host has mounted (as this process sees them).
for c in $(cut -d: -f2 /proc/self/cgroup | grep -v -e '^$' -e '^name='); do
  mkdir -p "/sys/fs/cgroup/$c"
  mount -t cgroup -o "$c" cgroup "/sys/fs/cgroup/$c"
done
mount -o remount,ro /sys/fs/cgroup

exec env -i container=p35-test "SYSTEMD_UNIT_PATH=$W/units:/etc/systemd/system" \
  /lib/systemd/systemd --system --unit=multi-user.target --log-target=journal --log-level=info
