#!/bin/bash
# dracut module: boot an installed cOS disk. The kernel command line names the partition
# (root=LABEL=COS_STATE) and the image file on it (cos-img/filename=/cOS/active.img); the
# image is mounted read-only as the root, and cos-layout makes the paths of the layout
# (/run/cos/cos-layout.env, written by the "rootfs" stage) writable.

check() {
    return 255   # only when asked for: add_dracutmodules+=" cos-immutable "
}

depends() {
    echo rootfs-block
    return 0
}

installkernel() {
    instmods loop ext4 overlay
}

install() {
    inst_multiple mount umount mkdir losetup
    inst_hook mount 10 "$moddir/mount-cos-image.sh"
    inst_simple "$moddir/cos-layout.sh" /sbin/cos-layout
}
