#!/bin/sh
# /init of a pod-VM: mount the kernel's file systems, load the virtio modules listed in
# /etc/modules (in dependency order), mount the pod's shared directory, then hand PID 1 to the
# agent.  Anything failing here powers the VM off (the host reports the console's last lines).
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs -o mode=1777 tmp /tmp
while read -r m; do
    insmod "/lib/modules/$m" || echo "atoll-podvm: insmod $m failed"
done < /etc/modules
ip link set lo up 2>/dev/null
# the pod's network: atoll.net=<ip>/<prefix>,<gateway>,<mtu> (the host moved the pod's veth here)
for arg in $(cat /proc/cmdline); do
    case "$arg" in atoll.net=*) net="${arg#atoll.net=}" ;; esac
done
if [ -n "$net" ]; then
    IFS=, read -r addr gw mtu <<EOF2
$net
EOF2
    ip link set eth0 mtu "$mtu" up && ip addr add "$addr" dev eth0 &&
        ip route add default via "$gw" || echo "atoll-podvm: network setup failed"
fi
mkdir -p /mnt/pod
if ! mount -t virtiofs pod /mnt/pod; then
    echo "atoll-podvm: cannot mount the pod's shared directory"
    reboot -f
fi
exec /sbin/atoll-agent
