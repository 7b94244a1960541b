#!/bin/sh
# mount hook: the image file on the root partition becomes the (read-only) root. The
# partition itself (root=LABEL=COS_STATE) was mounted at /sysroot and, having no root file
# system layout, unmounted again by dracut; it is mounted at /run/cos/state to reach the
# image (the real system mounts it there again: run-cos-state.mount).
type getarg >/dev/null 2>&1 || . /lib/dracut-lib.sh

image=$(getarg cos-img/filename=)
if [ -n "$image" ] && ! ismounted "$NEWROOT"; then
    state=/run/cos/state
    device=$(label_uuid_to_dev "$(getarg root=)")
    mkdir -p "$state" /run/cos
    ismounted "$state" || mount -o ro "$device" "$state" || warn "cos-immutable: cannot mount $device"
    if mount -o loop,ro "$state$image" "$NEWROOT"; then
        echo "$image" > /run/cos/active_image
        if getargbool 0 cos.recovery; then
            : > /run/cos/recovery_mode
        fi
    else
        warn "cos-immutable: cannot mount $image from $device"
    fi
fi
