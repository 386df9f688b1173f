#!/bin/sh
# Atoll's tiny guest: PID 1 of a busybox initramfs (see atoll/vmimage/tiny.py).
export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/root
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmp /tmp
mount -t tmpfs run /run
while read -r module; do insmod "/lib/modules/$module" 2>/dev/null; done < /etc/modules
echo "atoll-tiny: kernel $(uname -r) up in $(cut -d' ' -f1 /proc/uptime) s"

wait_for() {  # wait_for PATH: up to 5 s for a device to appear
    i=0
    while [ ! -e "$1" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
}

# eth0 from ip=<client>::<gateway>:<netmask>:<hostname>:<device>:off on the kernel command line
ifconfig lo 127.0.0.1 up
for arg in $(cat /proc/cmdline); do
    case "$arg" in ip=*)
        IFS=: read -r client _ gw mask host dev _ <<IP
${arg#ip=}
IP
        dev=${dev:-eth0}
        wait_for "/sys/class/net/$dev"
        ifconfig "$dev" "$client" netmask "$mask" up
        [ -n "$gw" ] && route add default gw "$gw"
        [ -n "$host" ] && hostname "$host"
        echo "atoll-tiny: $dev $client/$mask via $gw"
        ;;
    esac
done

# cloud-init NoCloud: an ISO 9660 disk labelled cidata
mkdir -p /run/seed
wait_for /dev/vda
for disk in /dev/vd*; do
    if mount -t iso9660 -o ro "$disk" /run/seed 2>/dev/null; then
        [ -f /run/seed/meta-data ] && break
        umount /run/seed
    fi
done
if [ -f /run/seed/meta-data ]; then
    host=$(sed -n 's/^local-hostname: *//p' /run/seed/meta-data | tr -d "'\"")
    [ -n "$host" ] && hostname "$host"
    if [ -f /run/seed/user-data ]; then
        if head -n1 /run/seed/user-data | grep -q '^#!'; then
            cp /run/seed/user-data /run/user-script && chmod +x /run/user-script
            echo "atoll-tiny: running the user-data script"
            /run/user-script
        else
            awk -f /etc/cloudinit.awk /run/seed/user-data > /run/cloud-init.sh
            echo "atoll-tiny: running cloud-config"
            sh /run/cloud-init.sh
        fi
    fi
    echo "atoll-tiny: cloud-init done"
else
    echo "atoll-tiny: no cloud-init seed"
fi

# the ACPI power button (QMP system_powerdown) powers off cleanly
acpid -c /etc/acpi -a /etc/acpid.conf
echo "atoll-tiny: ready"
while true; do
    setsid cttyhack sh -l
done
