#!/usr/bin/env bash
# A throw-away "device": an overlay of a cached chroot with its own CA, keyring,
# os-release and target directories, in which the real systemd-sysupdate runs: Debian
# trixie (systemd 257) by default, sid (systemd 262) with E2E_DEVICE_SUITE=sid.
#
#   tests/e2e/device.sh up DIR CA_CRT KEYRING [IMAGE_VERSION]
#   tests/e2e/device.sh sysupdate DIR [systemd-sysupdate args...]
#   tests/e2e/device.sh down DIR
#
# E2E_DEVICE_SUITE=trixie|sid (up only) picks the chroot; DIR/suite records it.
#
# up:   builds/reuses the cached chroot (chroot.sh; SYSUPDATE_E2E_CACHE selects the cache),
#       then creates DIR/root as an overlay (lower = cached chroot, upper = DIR/upper), so
#       every device starts pristine and the cache is never modified.  If the overlay mount
#       is refused it says so and falls back to a full copy (cp -a, ~230 MB);
#       E2E_DEVICE_MODE=copy forces the copy.
#       Inside DIR/root it
#         * mounts proc (systemd-sysupdate needs it to watch its systemd-pull children:
#           without it "Failed to add child process to event loop: Function not implemented");
#           /dev, /sys and /run are not needed (debootstrap leaves static /dev nodes);
#         * installs CA_CRT as /usr/local/share/ca-certificates/sysupdate-e2e.crt and runs
#           update-ca-certificates (libcurl in the chroot uses the system store);
#         * installs KEYRING (binary, `gpg --export` output) as /etc/systemd/import-pubring.gpg
#           (systemd 257 and earlier) and /etc/systemd/import-pubring.pgp (258 and later), as
#           the NixOS module does;
#         * replaces the /etc/os-release symlink by a file with IMAGE_ID=sysupdate-e2e and
#           IMAGE_VERSION (default 16) - informational only: sysupdate derives installed
#           versions from the target directories, not from os-release;
#         * creates the empty target directories /var/lib/e2e/uki and /var/lib/e2e/store and
#           the (empty) definitions directory /etc/sysupdate-e2e.d (the test writes transfers).
#       Prints E2E_DEVICE_DIR=, E2E_DEVICE_ROOT= and E2E_DEVICE_DEFS= lines on stdout.
# sysupdate: chroot DIR/root /usr/lib/systemd/systemd-sysupdate --definitions=/etc/sysupdate-e2e.d ARGS
#       (stdout/stderr/exit status passed through unchanged).
# down: unmounts everything below DIR (proc, overlay), deletes DIR (never crossing into
#       another file system).  Idempotent.
#
# Needs root, util-linux (mount, findmnt), and chroot.sh's requirements on first use.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DEFS=/etc/sysupdate-e2e.d

die() { echo "device.sh: ERROR: $*" >&2; exit 1; }
log() { echo "device.sh: $*" >&2; }
usage() { die "usage: $0 up DIR CA_CRT KEYRING [IMAGE_VERSION] | sysupdate DIR [ARGS...] | down DIR"; }

umount_below() {
    local dir m mnts
    dir=$(realpath -m "$1")
    mnts=$(findmnt -rn -o TARGET | awk -v d="$dir" '$0 == d || index($0, d "/") == 1' | sort -r) || true
    for m in $mnts; do
        umount "$m" 2>/dev/null || umount -l "$m" || die "cannot unmount $m"
    done
    mnts=$(findmnt -rn -o TARGET | awk -v d="$dir" '$0 == d || index($0, d "/") == 1') || true
    [[ -z $mnts ]] || die "still mounted below $dir: $mnts"
}

do_down() {
    local dir
    dir=$(realpath -m "$1")
    [[ -e $dir ]] || return 0
    umount_below "$dir"
    rm -rf --one-file-system "$dir" || die "cannot remove $dir"
}

do_up() {
    local dir=$1 ca=$2 keyring=$3 version=${4:-16} cache root
    [[ $(id -u) -eq 0 ]] || die "must run as root"
    [[ -s $ca ]] || die "CA certificate $ca missing"
    [[ -s $keyring ]] || die "keyring $keyring missing"
    # An ASCII-armored keyring makes gpg fail with "No public key" inside systemd-pull.
    [[ $(head -c 5 "$keyring") != "-----" ]] || die "$keyring is ASCII-armored; systemd needs a binary keyring (gpg --export)"
    mkdir -p "$dir"
    dir=$(realpath "$dir")
    [[ ! -e $dir/root ]] || die "$dir/root exists already (device.sh down $dir first)"

    local suite=${E2E_DEVICE_SUITE:-trixie}
    cache=$("$HERE/chroot.sh" --suite "$suite") || die "chroot.sh --suite $suite failed"
    echo "$suite" >"$dir/suite"
    mkdir -p "$dir/upper" "$dir/work" "$dir/root"
    if [[ ${E2E_DEVICE_MODE:-overlay} != copy ]] && mount -t overlay overlay -o "lowerdir=$cache,upperdir=$dir/upper,workdir=$dir/work" "$dir/root" 2>"$dir/overlay.err"; then
        echo overlay >"$dir/mode"
    else
        [[ ${E2E_DEVICE_MODE:-overlay} == copy ]] \
            || log "WARNING: overlay mount refused ($(cat "$dir/overlay.err")); copying the chroot instead (slower)"
        cp -a "$cache/." "$dir/root/" || die "cannot copy $cache"
        echo copy >"$dir/mode"
    fi
    root=$dir/root
    # If anything below fails, leave nothing mounted.
    trap 'rc=$?; if [[ $rc -ne 0 ]]; then do_down "$dir" || true; fi' EXIT

    mount -t proc proc "$root/proc" || die "cannot mount proc in $root"

    install -D -m 644 "$ca" "$root/usr/local/share/ca-certificates/sysupdate-e2e.crt"
    chroot "$root" update-ca-certificates >"$dir/update-ca-certificates.log" 2>&1 \
        || { cat "$dir/update-ca-certificates.log" >&2; die "update-ca-certificates failed in the chroot"; }
    grep -q '1 added' "$dir/update-ca-certificates.log" \
        || { cat "$dir/update-ca-certificates.log" >&2; die "update-ca-certificates did not add the test CA"; }

    install -D -m 644 "$keyring" "$root/etc/systemd/import-pubring.gpg"
    install -D -m 644 "$keyring" "$root/etc/systemd/import-pubring.pgp"

    # /etc/os-release is a symlink to ../usr/lib/os-release: replace it, do not write through it.
    local osr
    osr=$(grep -v '^IMAGE_\(ID\|VERSION\)=' "$root/usr/lib/os-release")
    rm -f "$root/etc/os-release"
    printf '%s\nIMAGE_ID=sysupdate-e2e\nIMAGE_VERSION=%s\n' "$osr" "$version" >"$root/etc/os-release"

    mkdir -p "$root/var/lib/e2e/uki" "$root/var/lib/e2e/store" "$root$DEFS"
    trap - EXIT
    echo "E2E_DEVICE_DIR=$dir"
    echo "E2E_DEVICE_ROOT=$root"
    echo "E2E_DEVICE_DEFS=$root$DEFS"
    echo "E2E_DEVICE_SUITE=$suite"
}

do_sysupdate() {
    local dir root
    dir=$(realpath "$1"); shift
    root=$dir/root
    [[ -x $root/usr/lib/systemd/systemd-sysupdate ]] || die "no device at $dir (device.sh up first)"
    [[ -e $root/proc/self ]] || die "proc is not mounted in $root"
    exec chroot "$root" /usr/lib/systemd/systemd-sysupdate --definitions="$DEFS" "$@"
}

case ${1:-} in
    up) [[ $# -ge 4 && $# -le 5 ]] || usage; shift; do_up "$@" ;;
    sysupdate) [[ $# -ge 2 ]] || usage; shift; do_sysupdate "$@" ;;
    down) [[ $# -eq 2 ]] || usage; do_down "$2" ;;
    *) usage ;;
esac
