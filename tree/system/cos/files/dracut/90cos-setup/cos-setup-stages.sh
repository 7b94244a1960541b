#!/bin/sh
# The runner lives in the real root (it needs its Python): run it there, chrooted, with the
# kernel file systems the tools it calls expect (systemd-firstboot reads /proc/cmdline) and
# the initramfs' /run, which becomes the system's /run (the layout is recorded there).
# A read-only image root (cos-immutable) gets its writable paths between the two stages.
if [ -x /sysroot/usr/bin/cos-setup ]; then
    for fs in proc sys dev run; do
        mount --bind "/$fs" "/sysroot/$fs"
    done
    chroot /sysroot /usr/bin/cos-setup rootfs || warn "cos-setup rootfs reported failures"
    if [ -e /run/cos/active_image ] && [ -x /sbin/cos-layout ]; then
        /sbin/cos-layout /sysroot
    fi
    chroot /sysroot /usr/bin/cos-setup initramfs || warn "cos-setup initramfs reported failures"
    for fs in run dev sys proc; do
        umount "/sysroot/$fs"
    done
fi
