#!/bin/sh
# The runner lives in the real root (it needs its Python): run it there, chrooted, with the
# kernel file systems the tools it calls expect (systemd-firstboot reads /proc/cmdline).
if [ -x /sysroot/usr/bin/cos-setup ]; then
    for fs in proc sys dev; do
        mount --bind "/$fs" "/sysroot/$fs"
    done
    for stage in rootfs initramfs; do
        chroot /sysroot /usr/bin/cos-setup "$stage" || warn "cos-setup $stage reported failures"
    done
    for fs in dev sys proc; do
        umount "/sysroot/$fs"
    done
fi
