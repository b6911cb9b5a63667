#!/usr/bin/env bash
# Pilot for the end-to-end harness: the real systemd-sysupdate 257 (Debian trixie chroot)
# fetches a hand-made, gpg-signed channel over HTTPS from nginx, verifies and installs it.
# (Hand-made until `sysupdate-publish release` exists; then the tool writes the channel.)
#
#   sudo tests/e2e/pilot.sh          (runs as root; exit 0 = every assertion held)
#
# Environment: SYSUPDATE_E2E_CACHE (chroot cache, default /var/cache/sysupdate-publish-e2e),
# E2E_KEEP=1 keeps the work directory (nginx stopped, mounts gone) for inspection.
#
# Runs itself in a private mount namespace (unshare -m): even if it is killed, its overlay
# and proc mounts vanish with it.  Traps stop nginx and gpg-agent and unmount on every exit.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

die() { echo "pilot.sh: FAIL: $*" >&2; exit 1; }
log() { echo "pilot.sh: $*" >&2; }

[[ $(id -u) -eq 0 ]] || die "must run as root"
for c in unshare gpg gpgconf sha256sum xz curl nginx openssl findmnt; do
    command -v "$c" >/dev/null || die "$c not installed"
done

if [[ -z ${E2E_IN_NS:-} ]]; then
    export E2E_IN_NS=1
    exec unshare --mount --propagation private -- "$0" "$@"
fi

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
secs_since() { local d=$(( $(now_ms) - $1 )); printf '%d.%01d' $((d / 1000)) $((d % 1000 / 100)); }
T0=$(now_ms)
WORK=$(mktemp -d /tmp/sysupdate-e2e-pilot.XXXXXX)
chmod 755 "$WORK"   # nginx workers and the chroot must be able to traverse it
export GNUPGHOME=$WORK/gnupg
NGX=$WORK/nginx
DEV=$WORK/device

cleanup() {
    local rc=$?
    set +e
    "$HERE/nginx.sh" stop "$NGX"
    [[ -d $GNUPGHOME ]] && gpgconf --homedir "$GNUPGHOME" --kill all 2>/dev/null
    [[ -d $WORK/gnupg-other ]] && gpgconf --homedir "$WORK/gnupg-other" --kill all 2>/dev/null
    "$HERE/device.sh" down "$DEV"
    if [[ -n $(findmnt -rn -o TARGET | grep -F "$WORK") ]]; then
        echo "pilot.sh: FAIL: mounts left below $WORK" >&2; rc=1
    fi
    if [[ ${E2E_KEEP:-0} == 1 ]]; then
        log "kept $WORK"
    else
        rm -rf --one-file-system "$WORK"
    fi
    if [[ $rc -eq 0 ]]; then
        log "PASS ($(secs_since "$T0") s)"
    else
        echo "pilot.sh: FAILED (exit $rc)" >&2
    fi
    exit $rc
}
trap cleanup EXIT
trap 'log "interrupted (SIGINT)"; exit 130' INT
trap 'log "interrupted (SIGTERM)"; exit 143' TERM

# ---------------------------------------------------------------- helpers
# sysup ARGS... : run systemd-sysupdate in the device; sets RC, OUT (stdout), ERR (stderr file).
sysup() {
    set +e
    OUT=$("$HERE/device.sh" sysupdate "$DEV" "$@" 2>"$WORK/last.err")
    RC=$?
    set -e
    ERR=$WORK/last.err
    printf '\n$ systemd-sysupdate %s   -> exit %s\n%s\n' "$*" "$RC" "$OUT" >>"$WORK/transcript"
    sed 's/^/    | /' "$ERR" >>"$WORK/transcript"
}
expect_rc() { [[ $RC == "$1" ]] || { tail -n 20 "$ERR" >&2; die "$2: exit $RC, expected $1"; }; }
expect_out() { [[ $OUT == "$1" ]] || { tail -n 20 "$ERR" >&2; die "$2: stdout '$OUT', expected '$1'"; }; }
expect_err() { grep -qF -- "$1" "$ERR" || { tail -n 20 "$ERR" >&2; die "$2: stderr lacks '$1'"; }; }
installed() { (cd "$DEV/root/var/lib/e2e" && find uki store -type f | LC_ALL=C sort | tr '\n' ' '); }

# ---------------------------------------------------------------- chroot (cached)
t=$(now_ms)
"$HERE/chroot.sh" >/dev/null
log "chroot ready ($(secs_since "$t") s)"; t=$(now_ms)

# ---------------------------------------------------------------- signing key
mkdir -m 700 "$GNUPGHOME"
gpg --batch --passphrase '' --quick-gen-key 'Test <t@example.org>' ed25519 sign never 2>"$WORK/gpg.log" \
    || { cat "$WORK/gpg.log" >&2; die "gpg key generation failed"; }
gpg --batch --export >"$WORK/pubring.gpg"
[[ -s $WORK/pubring.gpg ]] || die "gpg --export produced nothing"

# ---------------------------------------------------------------- channel
log "signing key ready ($(secs_since "$t") s)"; t=$(now_ms)
"$HERE/nginx.sh" start "$NGX" auto auto >"$WORK/nginx.env" || die "nginx did not start"
log "nginx ready ($(secs_since "$t") s)"; t=$(now_ms)
# shellcheck disable=SC1091
. "$WORK/nginx.env"
CH=$E2E_WWW            # channel root = document root
A=$CH/x86-64
mkdir -p "$A"
for v in 17 18; do
    printf 'UKI payload: appliance version %s\n' "$v" | xz -c >"$A/appliance_$v.efi.xz"
    printf 'STORE payload: store image version %s\n' "$v" | xz -c >"$A/store_$v.img.xz"
done
sign_channel() {  # manifest of every payload in $A, sorted by name, signed (binary, detached)
    (cd "$A" && find . -maxdepth 1 -type f ! -name 'SHA256SUMS*' -printf '%f\n' | LC_ALL=C sort \
        | xargs sha256sum -b >SHA256SUMS.new && mv SHA256SUMS.new SHA256SUMS)
    gpg --batch --yes --detach-sign -o "$A/SHA256SUMS.gpg" "$A/SHA256SUMS" 2>>"$WORK/gpg.log"
}
sign_channel

# The signature verifies with systemd's own gpg command line (host gpg).
mkdir -m 700 "$WORK/verify-home"
gpg --no-options --no-default-keyring --no-auto-key-locate --no-auto-check-trustdb --batch \
    --trust-model=always --homedir="$WORK/verify-home" --keyring="$WORK/pubring.gpg" \
    --verify "$A/SHA256SUMS.gpg" - <"$A/SHA256SUMS" 2>"$WORK/verify.log" \
    || { cat "$WORK/verify.log" >&2; die "host gpg does not verify the hand-made signature"; }

# Hosting contract: real 404 for the signature names systemd >= 258 tries first; no
# Content-Encoding on payloads.
for n in SHA256SUMS.sha256.asc SHA256SUMS.sha256.gpg SHA256SUMS.asc; do
    code=$(curl -sS --cacert "$E2E_CA" --noproxy '*' -o /dev/null -w '%{http_code}' "$E2E_HTTPS_URL/x86-64/$n")
    [[ $code == 404 ]] || die "GET /x86-64/$n gave HTTP $code, expected 404"
done
for n in SHA256SUMS SHA256SUMS.gpg appliance_18.efi.xz; do
    hdr=$(curl -sS --cacert "$E2E_CA" --noproxy '*' -H 'Accept-Encoding: gzip' -D - -o /dev/null "$E2E_HTTPS_URL/x86-64/$n")
    [[ $hdr == "HTTP/1.1 200"* ]] || die "GET /x86-64/$n: ${hdr%%$'\r'*}"
    ! grep -qi '^content-encoding' <<<"$hdr" || die "GET /x86-64/$n sent Content-Encoding"
done

log "channel signed and served ($(secs_since "$t") s)"; t=$(now_ms)

# ---------------------------------------------------------------- device at 16
"$HERE/device.sh" up "$DEV" "$E2E_CA" "$WORK/pubring.gpg" 16 >"$WORK/device.env" || die "device.sh up failed"
log "device up ($(secs_since "$t") s)"; t=$(now_ms)
# shellcheck disable=SC1091
. "$WORK/device.env"
R=$E2E_DEVICE_ROOT
# "At 16": installed versions come from the target directories, not from os-release.
printf 'UKI payload: appliance version 16\n' >"$R/var/lib/e2e/uki/appliance_16.efi"
printf 'STORE payload: store image version 16\n' >"$R/var/lib/e2e/store/store_16.img"
write_transfers() {  # write_transfers BASE_URL
    cat >"$E2E_DEVICE_DEFS/10-uki.transfer" <<EOF
[Transfer]
Verify=yes

[Source]
Type=url-file
Path=$1/%a/
MatchPattern=appliance_@v.efi.xz

[Target]
Type=regular-file
Path=/var/lib/e2e/uki
MatchPattern=appliance_@v.efi
EOF
    cat >"$E2E_DEVICE_DEFS/20-store.transfer" <<EOF
[Transfer]
Verify=yes

[Source]
Type=url-file
Path=$1/%a/
MatchPattern=store_@v.img.xz

[Target]
Type=regular-file
Path=/var/lib/e2e/store
MatchPattern=store_@v.img
EOF
}
write_transfers "https://localhost:$E2E_HTTPS_PORT"

# ---------------------------------------------------------------- list / check-new / update
sysup --version
expect_rc 0 "--version"; [[ $OUT == "systemd 257 "* ]] || die "not systemd 257: $OUT"

sysup list
expect_rc 0 "list"
log "list:"$'\n'"$OUT"
grep -Eq '^. 18 +✓ +candidate$' <<<"$OUT" || die "list: 18 is not the candidate"
grep -Eq '^. 17 +✓ +available$' <<<"$OUT" || die "list: 17 not available"
grep -Eq '^. 16 +✓ +current$' <<<"$OUT" || die "list: 16 not current"
expect_err "https://localhost:$E2E_HTTPS_PORT/x86-64/SHA256SUMS" "list (%a must resolve to x86-64)"
expect_err "Signature verification succeeded." "list"

sysup --json=short list
expect_rc 0 "--json=short list"
expect_out '{"current":"16","all":["18","17","16"],"appstreamUrls":[]}' "--json=short list"

sysup check-new
expect_rc 0 "check-new"; expect_out 18 "check-new"
sysup --json=short check-new
expect_rc 0 "--json=short check-new"; expect_out '{"available":"18"}' "--json=short check-new"

sysup update
expect_rc 0 "update"
expect_err "Successfully installed update '18'." "update"
[[ $(installed) == "store/store_16.img store/store_18.img uki/appliance_16.efi uki/appliance_18.efi " ]] \
    || die "installed files after update: $(installed)"
cmp <(xz -dc "$A/appliance_18.efi.xz") "$R/var/lib/e2e/uki/appliance_18.efi" || die "installed UKI differs from the decompressed payload"
cmp <(xz -dc "$A/store_18.img.xz") "$R/var/lib/e2e/store/store_18.img" || die "installed store image differs from the decompressed payload"
log "update installed 18: $(installed) ($(secs_since "$t") s for --version, list x2, check-new x2, update)"; t=$(now_ms)

sysup check-new
expect_rc 1 "check-new with nothing new (plain mode exits 1, prints nothing)"; expect_out "" "check-new"
sysup --json=short check-new
expect_rc 0 "--json=short check-new with nothing new"; expect_out '{"available":null}' "--json=short check-new"
sysup update
expect_rc 0 "update with nothing new"; expect_err "No update needed." "update with nothing new"

# Same result with the IP in the URL (the server certificate has SAN IP:127.0.0.1 too).
write_transfers "https://127.0.0.1:$E2E_HTTPS_PORT"
sysup --json=short list
expect_rc 0 "list via https://127.0.0.1"
expect_out '{"current":"18","all":["18","17","16"],"appstreamUrls":[]}' "list via https://127.0.0.1"
write_transfers "https://localhost:$E2E_HTTPS_PORT"

# ---------------------------------------------------------------- refusals
snapshot_installed=$(installed)

# 1. manifest changed after signing
printf 'UKI 19\n' | xz -c >"$A/appliance_19.efi.xz"; printf 'STORE 19\n' | xz -c >"$A/store_19.img.xz"
(cd "$A" && sha256sum -b appliance_19.efi.xz store_19.img.xz >>SHA256SUMS)
for verb in list check-new update; do
    sysup "$verb"
    expect_rc 1 "$verb with a tampered manifest"
    expect_err "BAD signature" "$verb with a tampered manifest"
    expect_err "DOWNLOAD INVALID: Signature verification failed." "$verb with a tampered manifest"
done
sysup --json=short check-new
expect_rc 1 "--json=short check-new with a tampered manifest"; expect_out "" "--json check-new tampered"
[[ $(installed) == "$snapshot_installed" ]] || die "tampered manifest changed the installed files"

# 2. correctly formed manifest signed by a key not in the keyring
mkdir -m 700 "$WORK/gnupg-other"
GNUPGHOME=$WORK/gnupg-other gpg --batch --passphrase '' --quick-gen-key 'Other <o@example.org>' ed25519 sign never 2>>"$WORK/gpg.log"
GNUPGHOME=$WORK/gnupg-other gpg --batch --yes --detach-sign -o "$A/SHA256SUMS.gpg" "$A/SHA256SUMS" 2>>"$WORK/gpg.log"
sysup update
expect_rc 1 "update with an unknown signer"; expect_err "Can't check signature: No public key" "unknown signer"
[[ $(installed) == "$snapshot_installed" ]] || die "unknown signer changed the installed files"

# 3. no signature at all (systemd 257 asks for SHA256SUMS.gpg only)
rm "$A/SHA256SUMS.gpg"
sysup list
expect_rc 1 "list without signature"
expect_err "HTTP request to https://localhost:$E2E_HTTPS_PORT/x86-64/SHA256SUMS.gpg failed with code 404." "list without signature"

# 4. properly signed 19, then a payload replaced on the server
sign_channel
printf 'EVIL\n' | xz -c >"$A/store_19.img.xz"
sysup update
expect_rc 1 "update with a replaced payload"
expect_err "file did not check out, file has been tampered with." "replaced payload"
[[ $(installed) == "$snapshot_installed" ]] || die "replaced payload changed the installed files: $(installed)"
[[ -z $(find "$R/var/lib/e2e" -name '.#*') ]] || die "temporary files left in the targets"

# 5. a version missing its store image is not offered
rm "$A/store_19.img.xz"
sign_channel
sysup --json=short list
expect_rc 0 "list with incomplete 19"
expect_out '{"current":"18","all":["18","17","16"],"appstreamUrls":[]}' "incomplete 19 must not be listed"

# 6. explicit older version: allowed, with notices.  Default InstancesMax=3: vacuum keeps
#    2 (16, 18), nothing is removed, the newer 18 stays installed.
sysup update 17
expect_rc 0 "update 17"
expect_err "Selected update '17' is older than newest installed version, proceeding anyway." "update 17"
[[ $(installed) == "store/store_16.img store/store_17.img store/store_18.img uki/appliance_16.efi uki/appliance_17.efi uki/appliance_18.efi " ]] \
    || die "after update 17: $(installed)"

log "refusal checks done ($(secs_since "$t") s)"
[[ -z ${E2E_TRANSCRIPT:-} ]] || cp "$WORK/transcript" "$E2E_TRANSCRIPT"
log "all assertions held${E2E_TRANSCRIPT:+; transcript copied to $E2E_TRANSCRIPT}"
