#!/bin/sh
# cos-layout: apply /run/cos/cos-layout.env (00_rootfs.yaml) to the read-only root at
# $1 (/sysroot): RW_PATHS become overlays on a tmpfs (OVERLAY=tmpfs:SIZE), VOLUMES
# (LABEL=X:/path) are mounted when the disk has them.
root=${1:-/sysroot}
RW_PATHS="/etc /var /srv"
OVERLAY="tmpfs:25%"
VOLUMES=""
# read, not sourced: the values have spaces and may or may not be quoted
if [ -f /run/cos/cos-layout.env ]; then
    while IFS= read -r line; do
        value=${line#*=}
        value=${value#\"}
        value=${value%\"}
        case ${line%%=*} in
            RW_PATHS) RW_PATHS=$value ;;
            OVERLAY) OVERLAY=$value ;;
            VOLUMES) VOLUMES=$value ;;
        esac
    done < /run/cos/cos-layout.env
fi

mkdir -p /run/overlay
mount -t tmpfs -o "size=${OVERLAY#tmpfs:},mode=0755" cos-overlay /run/overlay
for path in $RW_PATHS; do
    [ -d "$root$path" ] || continue
    work=/run/overlay$path
    mkdir -p "$work/upper" "$work/work"
    mount -t overlay overlay -o "lowerdir=$root$path,upperdir=$work/upper,workdir=$work/work" \
        "$root$path" || echo "cos-layout: cannot make $path writable" >&2
done
for volume in $VOLUMES; do
    device=${volume%%:*}
    path=${volume#*:}
    label=${device#LABEL=}
    if [ -e "/dev/disk/by-label/$label" ]; then
        mkdir -p "$root$path" 2>/dev/null
        mount "/dev/disk/by-label/$label" "$root$path" || echo "cos-layout: cannot mount $label" >&2
    fi
done
