#!/usr/bin/env bash
# Build (or reuse) a Debian chroot that provides a real systemd-sysupdate for the
# end-to-end suite: trixie (systemd 257, the default) or sid (systemd 261 or later, 262 when
# written: components, libcurl downloads, ConditionFraction=).
#
#   tests/e2e/chroot.sh [--suite trixie|sid] [CACHE_DIR]
#
# CACHE_DIR defaults to ${SYSUPDATE_E2E_CACHE:-/var/cache/sysupdate-publish-e2e}.
# The trixie chroot lives at CACHE_DIR/$E2E_CHROOT_VERSION/root (as it always has), the sid
# one at CACHE_DIR/sid-$E2E_CHROOT_VERSION/root; the path is printed on stdout (the only
# thing printed on stdout; progress goes to stderr).
#
# Idempotent and crash-safe:
#   * debootstrap runs into CACHE_DIR/<ver>/root.tmp.XXXXXX and is renamed to root only after
#     it has been verified; the stamp file root/.sysupdate-e2e-stamp records the exact build
#     parameters.  A root without a matching stamp (half built, other parameters) is
#     removed and rebuilt.
#   * an flock on CACHE_DIR/<ver>/.lock serialises concurrent runs.
#   * every mount left under a directory is unmounted before it is deleted, and deletion
#     uses rm --one-file-system, so a stale bind mount can never take host files with it.
#
# Needs: root, debootstrap, network access to the Debian mirror (first run only).
# Exits non-zero with a message on every failure; it never skips.
set -euo pipefail

E2E_CHROOT_VERSION=v1
SUITE=trixie
if [[ ${1:-} == --suite ]]; then
    SUITE=${2:?--suite needs trixie or sid}
    shift 2
fi
# The mirror this machine's apt uses (see /etc/apt/sources.list.d/debian.sources).
MIRROR=${SYSUPDATE_E2E_MIRROR:-http://deb.debian.org/debian}
case $SUITE in
    trixie)
        INCLUDE=systemd-container,gpg,ca-certificates
        SUBDIR=$E2E_CHROOT_VERSION
        # systemd-sysupdate --version must match this (bash pattern).
        WANT_SYSTEMD='systemd 257 *'
        ;;
    sid)
        # systemd 262 fetches with libcurl (dlopen()ed, so no package depends on it), and
        # debootstrap does not know the t64 name on its own.
        INCLUDE=systemd-container,gpg,ca-certificates,libcurl4t64
        SUBDIR=sid-$E2E_CHROOT_VERSION
        # sid moves: anything from 261 (ConditionFraction=) on.
        WANT_SYSTEMD='systemd 26[1-9] *'
        ;;
    *) echo "chroot.sh: ERROR: unknown suite $SUITE (trixie or sid)" >&2; exit 2 ;;
esac
# Packages whose failure to configure is expected: systemd-container's postinst wants a
# running dbus/systemd; its binaries are unpacked and work.
TOLERATED_UNCONFIGURED='^(systemd-container|systemd|dbus|dbus-system-bus-common|dbus-bin|dbus-daemon|dbus-session-bus-common|libpam-systemd|systemd-sysv)$'

die() { echo "chroot.sh: ERROR: $*" >&2; exit 1; }
log() { echo "chroot.sh: $*" >&2; }

[[ $(id -u) -eq 0 ]] || die "must run as root (debootstrap and chroot need it)"
command -v debootstrap >/dev/null || die "debootstrap not installed (apt-get install debootstrap)"
command -v flock >/dev/null || die "flock not installed (util-linux)"

CACHE=${1:-${SYSUPDATE_E2E_CACHE:-/var/cache/sysupdate-publish-e2e}}
BASE=$CACHE/$SUBDIR
ROOT=$BASE/root
STAMP_NAME=.sysupdate-e2e-stamp
STAMP_WANT="version=$E2E_CHROOT_VERSION suite=$SUITE variant=minbase include=$INCLUDE arch=$(dpkg --print-architecture)"

mkdir -p "$BASE"
# Workers of the test nginx run as nobody; keep the cache traversable (never mode 700).
chmod 755 "$CACHE" "$BASE"

# Unmount everything at or below $1 (deepest first), then delete it without crossing
# file systems.
umount_below() {
    local dir mnts m
    dir=$(realpath -m "$1")
    [[ -e $dir ]] || return 0
    mnts=$(findmnt -rn -o TARGET | awk -v d="$dir" '$0 == d || index($0, d "/") == 1' | sort -r) || true
    for m in $mnts; do
        log "unmounting stale mount $m"
        umount -l "$m" || die "cannot unmount $m"
    done
}
remove_tree() {
    [[ -e $1 ]] || return 0
    umount_below "$1"
    rm -rf --one-file-system "$1" || die "cannot remove $1"
}

# Verify a root: the tools the suite runs inside it must work.
verify_root() {
    local r=$1 v
    [[ -x $r/usr/lib/systemd/systemd-sysupdate ]] || { log "missing $r/usr/lib/systemd/systemd-sysupdate"; return 1; }
    [[ -x $r/usr/lib/systemd/systemd-pull ]] || { log "missing $r/usr/lib/systemd/systemd-pull"; return 1; }
    v=$(chroot "$r" /usr/lib/systemd/systemd-sysupdate --version 2>&1) || { log "systemd-sysupdate --version failed: $v"; return 1; }
    # shellcheck disable=SC2053 # a pattern on purpose
    [[ ${v%%$'\n'*} == $WANT_SYSTEMD ]] || { log "unexpected systemd-sysupdate version: ${v%%$'\n'*} (want $WANT_SYSTEMD)"; return 1; }
    chroot "$r" systemd-analyze --version >/dev/null 2>&1 || { log "systemd-analyze does not run in the chroot"; return 1; }
    chroot "$r" gpg --version >/dev/null 2>&1 || { log "gpg does not run in the chroot"; return 1; }
    chroot "$r" sh -c 'command -v update-ca-certificates' >/dev/null || { log "update-ca-certificates missing in the chroot"; return 1; }
    return 0
}

# The lock is inherited by debootstrap: if this script is SIGKILLed, the next run waits for
# the orphaned debootstrap to finish before it deletes its half-built tree.
exec 9>"$BASE/.lock"
if ! flock -n 9; then
    log "waiting for another build of $BASE (lock $BASE/.lock)"
    flock 9 || die "cannot lock $BASE/.lock"
fi

if [[ -d $ROOT && -f $ROOT/$STAMP_NAME && "$(cat "$ROOT/$STAMP_NAME")" == "$STAMP_WANT" ]]; then
    if verify_root "$ROOT"; then
        log "reusing $ROOT"
        echo "$ROOT"
        exit 0
    fi
    log "cached root $ROOT fails verification; rebuilding"
fi

# Anything else there (half-built, old parameters, broken, stale temp dirs) goes.
if [[ -e $ROOT ]]; then
    log "removing $ROOT (stamp missing or different: half built or other parameters)"
    remove_tree "$ROOT"
fi
for t in "$BASE"/root.tmp.*; do
    [[ -e $t ]] || continue
    log "removing stale $t"
    remove_tree "$t"
done

TMP=$(mktemp -d "$BASE/root.tmp.XXXXXX")
chmod 755 "$TMP"
cleanup() {
    local rc=$? i
    if [[ -n ${DB_PID:-} ]]; then
        log "stopping debootstrap (process group $DB_PID)"
        kill -TERM -- "-$DB_PID" 2>/dev/null || true
        for ((i = 0; i < 100; i++)); do kill -0 -- "-$DB_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL -- "-$DB_PID" 2>/dev/null || true
        wait "$DB_PID" 2>/dev/null || true
    fi
    if [[ -n ${TMP:-} && -e $TMP ]]; then
        umount_below "$TMP"
        rm -rf --one-file-system "$TMP" || true
    fi
    exit $rc
}
DB_PID=
trap cleanup EXIT
trap 'log "interrupted (SIGINT)"; exit 130' INT
trap 'log "interrupted (SIGTERM)"; exit 143' TERM

LOGF=$BASE/debootstrap.log
log "debootstrap $SUITE into $TMP from $MIRROR (log: $LOGF)"
start=$(date +%s)
# In its own process group, in the background: a signal to this script runs the trap at
# once (bash defers traps while a foreground child runs) and the trap can stop debootstrap
# and everything it started (wget, dpkg, ...) by process group id.
set +e
setsid debootstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$TMP" "$MIRROR" >"$LOGF" 2>&1 &
DB_PID=$!
wait "$DB_PID"
drc=$?
DB_PID=
set -e
end=$(date +%s)
log "debootstrap exited $drc after $((end - start)) s"

if [[ $drc -ne 0 ]]; then
    # Tolerate only a configure failure of the expected packages.  Anything else (download,
    # unpack, keyring, network) is fatal.
    [[ -f $TMP/var/lib/dpkg/status ]] || { tail -n 30 "$LOGF" >&2; die "debootstrap failed before dpkg was set up"; }
    bad=$(chroot "$TMP" dpkg-query -W -f='${db:Status-Abbrev} ${Package}\n' 2>/dev/null \
          | awk '$1 != "ii" {print $2}' | grep -Ev "$TOLERATED_UNCONFIGURED" || true)
    unpacked=$(chroot "$TMP" dpkg-query -W -f='${db:Status-Abbrev} ${Package}\n' systemd-container 2>/dev/null | awk '{print $1}')
    if [[ -n $bad || -z $unpacked ]]; then
        tail -n 30 "$LOGF" >&2
        die "debootstrap failed (exit $drc); packages not configured: ${bad:-<none>}; systemd-container status: ${unpacked:-<absent>}"
    fi
    log "tolerating expected configure failure (systemd-container status: $unpacked)"
fi

# debootstrap unmounts its own proc/sys on exit; make sure nothing is left.
umount_below "$TMP/proc"; umount_below "$TMP/sys"; umount_below "$TMP/dev"
rm -f "$TMP"/var/cache/apt/archives/*.deb

verify_root "$TMP" || { tail -n 30 "$LOGF" >&2; die "the freshly built chroot does not work"; }

printf '%s\n' "$STAMP_WANT" >"$TMP/$STAMP_NAME"
sync -f "$TMP/$STAMP_NAME" 2>/dev/null || sync
mv -T "$TMP" "$ROOT"
TMP=
echo "$((end - start))" >"$BASE/debootstrap.seconds"
log "built $ROOT ($(chroot "$ROOT" /usr/lib/systemd/systemd-sysupdate --version | head -1))"
echo "$ROOT"
