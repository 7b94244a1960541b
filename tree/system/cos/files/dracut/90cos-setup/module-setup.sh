#!/bin/bash
# dracut module: the cOS stages "rootfs" and "initramfs" run from the initramfs, against the
# real root, before switching to it (as cOS does), so /etc is set up before systemd starts.

check() {
    return 255   # only when asked for: add_dracutmodules+=" cos-setup "
}

depends() {
    return 0
}

install() {
    inst_multiple chroot mount umount
    inst_hook pre-pivot 90 "$moddir/cos-setup-stages.sh"
}
