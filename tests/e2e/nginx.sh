#!/usr/bin/env bash
# Start/stop a private nginx for the end-to-end suite.
#
#   tests/e2e/nginx.sh start DIR [HTTPS_PORT|auto] [HTTP_PORT|auto|none]
#   tests/e2e/nginx.sh stop  DIR
#   tests/e2e/nginx.sh certs DIR
#
# start: creates DIR (mode 755) with
#     DIR/www/            the document root (put the channel here)
#     DIR/ca.crt ca.key   the test CA (reused if DIR/ca.crt already exists)
#     DIR/server.crt/key  server certificate, SAN IP:127.0.0.1, DNS:localhost
#     DIR/nginx.conf      rendered from nginx.conf.in
#     DIR/nginx.pid error.log access.log tmp/
#     DIR/env             the lines printed on stdout (shell-sourceable)
#     DIR/htpasswd        basic auth for writes below /private/: user $E2E_WEBDAV_USER,
#                         password $E2E_WEBDAV_PASSWORD (fixed test values, printed too)
#     DIR/www/private/, DIR/www/readonly/  (writes need the login / are refused with 403)
#   HTTPS_PORT defaults to "auto" (a free port; retried if another process wins the race).
#   HTTP_PORT defaults to "none"; a port or "auto" adds a plain-HTTP listener with the same
#   WebDAV root (for upload tools that cannot use the test CA).
#   Prints on stdout, e.g.:
#     E2E_NGINX_DIR=/tmp/x
#     E2E_WWW=/tmp/x/www
#     E2E_CA=/tmp/x/ca.crt
#     E2E_HTTPS_PORT=41234
#     E2E_HTTPS_URL=https://localhost:41234
#     E2E_HTTP_PORT=           (empty when none)
#     E2E_HTTP_URL=
#     E2E_WEBDAV_USER=publisher  E2E_WEBDAV_PASSWORD=…  (the /private/ login)
#   Before returning it checks over HTTPS (curl --cacert) that an absent file gives 404,
#   that a present file gives 200 without Content-Encoding, and (dav-ext) that PROPFIND
#   works.  Any failure: nginx is stopped again and the script exits non-zero.
#
# certs: only the test CA and server certificate of `start` (DIR/ca.crt, DIR/server.crt,
#   DIR/server.key), for another HTTPS server devices must trust (`sysupdate-publish serve`);
#   prints E2E_CA=, E2E_CERT= and E2E_KEY=.  Needs only openssl, not root.
#
# stop: stops the nginx whose pid is in DIR/nginx.pid (only if that process really is an
#   nginx master started with DIR/nginx.conf), waits for it and its workers to exit.
#   Idempotent; exits 0 when nothing is running.
#
# Needs root (the config says "user root"), nginx (Debian: nginx-light),
# libnginx-mod-http-dav-ext, openssl, curl, iproute2 (ss).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TEMPLATE=$HERE/nginx.conf.in
DAV_EXT_SO=${E2E_NGINX_DAV_EXT_SO:-/usr/lib/nginx/modules/ngx_http_dav_ext_module.so}

WEBDAV_USER=publisher
WEBDAV_PASSWORD=test-password-not-secret

die() { echo "nginx.sh: ERROR: $*" >&2; exit 1; }
log() { echo "nginx.sh: $*" >&2; }

usage() { die "usage: $0 start DIR [HTTPS_PORT|auto] [HTTP_PORT|auto|none] | stop DIR | certs DIR"; }

# ---------------------------------------------------------------- stop
master_pid() {  # prints the pid of our nginx master, or nothing
    local dir=$1 pid cmd
    [[ -s $dir/nginx.pid ]] || return 0
    pid=$(tr -dc 0-9 <"$dir/nginx.pid")
    [[ -n $pid && -r /proc/$pid/cmdline ]] || return 0
    cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline")
    [[ $cmd == *"nginx: master process"*"$dir/nginx.conf"* || $cmd == *nginx*"-c $dir/nginx.conf"* ]] || return 0
    echo "$pid"
}

alive() { [[ -e /proc/$1 ]] && ! grep -q '^State:.*Z' "/proc/$1/status" 2>/dev/null; }

do_stop() {
    local dir pid kids sig i
    dir=$(realpath -m "$1")
    pid=$(master_pid "$dir")
    if [[ -z $pid ]]; then
        rm -f "$dir/nginx.pid"
        return 0
    fi
    kids=$(pgrep -P "$pid" || true)
    for sig in QUIT TERM KILL; do
        kill -"$sig" "$pid" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do
            alive "$pid" || break
            sleep 0.1
        done
        alive "$pid" || break
        log "nginx $pid did not exit on SIG$sig"
    done
    # Workers normally exit with the master; make sure (they are ours: children of our master).
    for k in $kids; do
        alive "$k" && kill -KILL "$k" 2>/dev/null || true
    done
    alive "$pid" && die "cannot stop nginx $pid"
    rm -f "$dir/nginx.pid"
    log "stopped nginx $pid"
}

# ---------------------------------------------------------------- start
gen_certs() {
    local dir=$1
    if [[ ! -s $dir/ca.crt || ! -s $dir/ca.key ]]; then
        openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
            -keyout "$dir/ca.key" -out "$dir/ca.crt" -days 3650 -subj "/CN=sysupdate-publish e2e test CA" \
            -addext "basicConstraints=critical,CA:TRUE" \
            -addext "keyUsage=critical,keyCertSign,cRLSign" \
            -addext "subjectKeyIdentifier=hash" 2>/dev/null \
            || die "openssl: cannot create the test CA"
    fi
    if [[ ! -s $dir/server.crt || ! -s $dir/server.key ]] \
        || ! openssl verify -CAfile "$dir/ca.crt" "$dir/server.crt" >/dev/null 2>&1; then
        openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
            -keyout "$dir/server.key" -out "$dir/server.csr" -subj "/CN=localhost" 2>/dev/null \
            || die "openssl: cannot create the server key"
        printf '%s\n' \
            "basicConstraints=critical,CA:FALSE" \
            "keyUsage=critical,digitalSignature,keyEncipherment" \
            "extendedKeyUsage=serverAuth" \
            "subjectAltName=IP:127.0.0.1,DNS:localhost" \
            "subjectKeyIdentifier=hash" \
            "authorityKeyIdentifier=keyid:always" >"$dir/server.ext"
        openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" \
            -CAcreateserial -days 3650 -sha256 -extfile "$dir/server.ext" -out "$dir/server.crt" 2>/dev/null \
            || die "openssl: cannot sign the server certificate"
        rm -f "$dir/server.csr"
    fi
    chmod 600 "$dir/ca.key" "$dir/server.key"
}

do_certs() {
    local dir
    command -v openssl >/dev/null || die "openssl not installed"
    mkdir -p "$1"
    dir=$(realpath "$1")
    gen_certs "$dir"
    printf 'E2E_CA=%s\nE2E_CERT=%s\nE2E_KEY=%s\n' "$dir/ca.crt" "$dir/server.crt" "$dir/server.key"
}

port_busy() { [[ -n $(ss -Htln "sport = :$1" 2>/dev/null) ]]; }

pick_port() {  # a port not currently listening on (the race is handled by retrying start)
    local p exclude=${1:-} i
    for ((i = 0; i < 200; i++)); do
        p=$((20000 + (RANDOM * 32768 + RANDOM) % 40000))
        [[ $p == "$exclude" ]] && continue
        port_busy "$p" || { echo "$p"; return 0; }
    done
    die "no free port found"
}

render() {  # render DIR HTTPS_PORT HTTP_PORT(empty = none)
    local dir=$1 https=$2 http=$3 load="" methods="" listen=""
    if [[ ${E2E_NGINX_DAV_EXT:-1} != 0 ]]; then
        [[ -f $DAV_EXT_SO ]] || die "$DAV_EXT_SO missing (apt-get install libnginx-mod-http-dav-ext), or set E2E_NGINX_DAV_EXT=0"
        load="load_module $DAV_EXT_SO;"
        methods="dav_ext_methods PROPFIND OPTIONS;"
    fi
    [[ -n $http ]] && listen="listen 127.0.0.1:$http;"
    sed -e "s|@STATE@|$dir|g" -e "s|@WWW@|$dir/www|g" \
        -e "s|@HTTPS_PORT@|$https|g" -e "s|@HTTP_LISTEN@|$listen|g" \
        -e "s|@LOAD_DAV_EXT@|$load|g" -e "s|@DAV_EXT_METHODS@|$methods|g" \
        "$TEMPLATE" >"$dir/nginx.conf"
    if grep -v '^[[:space:]]*#' "$dir/nginx.conf" | grep '@[A-Z_]*@' >&2; then die "unsubstituted placeholder in $dir/nginx.conf"; fi
}

check_http() {  # check_http URL EXPECTED_STATUS [curl args...]
    local url=$1 want=$2 got
    shift 2
    got=$(curl -sS -o /dev/null -w '%{http_code}' "$@" "$url") || die "curl $url failed"
    [[ $got == "$want" ]] || die "$url: HTTP $got, expected $want"
}

do_start() {
    local dir want_https=${2:-auto} want_http=${3:-none} https http i tries=20 curl_args
    command -v nginx >/dev/null || die "nginx not installed (apt-get install nginx-light)"
    command -v openssl >/dev/null || die "openssl not installed"
    command -v curl >/dev/null || die "curl not installed"
    command -v ss >/dev/null || die "ss not installed (apt-get install iproute2)"
    [[ -f $TEMPLATE ]] || die "missing $TEMPLATE"
    [[ $(id -u) -eq 0 ]] || die "must run as root"
    mkdir -p "$1"
    dir=$(realpath "$1")
    [[ -z $(master_pid "$dir") ]] || die "an nginx is already running for $dir (stop it first)"
    mkdir -p "$dir/www" "$dir/tmp"
    # Keep every component of the path world-traversable: an nginx worker that is not root
    # answers 403 (not 404) for absent files below a mode-700 directory.
    chmod 755 "$dir" "$dir/www"
    local p=$dir
    while [[ $p != / ]]; do
        if ! perm=$(stat -c %a "$p"); then die "cannot stat $p"; fi
        (( (8#$perm & 8#001) )) || log "warning: $p is not world-traversable (mode $perm); fine while workers run as root"
        p=$(dirname "$p")
    done
    gen_certs "$dir"
    printf '%s:%s\n' "$WEBDAV_USER" "$(openssl passwd -apr1 "$WEBDAV_PASSWORD")" >"$dir/htpasswd"
    mkdir -p "$dir/www/private" "$dir/www/readonly"
    chmod 755 "$dir/www/private" "$dir/www/readonly"

    for ((i = 0; i < tries; i++)); do
        if [[ $want_https == auto ]]; then https=$(pick_port); else https=$want_https; fi
        case $want_http in
            none|"") http="" ;;
            auto) http=$(pick_port "$https") ;;
            *) http=$want_http ;;
        esac
        render "$dir" "$https" "$http"
        : >"$dir/start.log"
        if nginx -p "$dir/" -c "$dir/nginx.conf" >"$dir/start.log" 2>&1; then
            break
        fi
        if grep -q 'Address already in use' "$dir/start.log" && { [[ $want_https == auto ]] || [[ $want_http == auto ]]; }; then
            log "port collision ($https/${http:-none}), retrying"
            continue
        fi
        cat "$dir/start.log" >&2
        die "nginx failed to start (config $dir/nginx.conf)"
    done
    ((i < tries)) || die "nginx: no free port after $tries attempts"

    for ((i = 0; i < 50; i++)); do
        [[ -n $(master_pid "$dir") ]] && break
        sleep 0.1
    done
    [[ -n $(master_pid "$dir") ]] || { cat "$dir/start.log" "$dir/error.log" >&2 2>/dev/null; die "nginx did not write $dir/nginx.pid"; }

    # From here on, a failed check stops nginx again.
    trap 'rc=$?; if [[ $rc -ne 0 ]]; then do_stop "$dir" || true; fi' EXIT

    local base=https://localhost:$https
    curl_args=(--cacert "$dir/ca.crt" --noproxy '*')
    local probe=.e2e-probe-$$
    rm -f "$dir/www/$probe"
    check_http "$base/$probe" 404 "${curl_args[@]}"
    check_http "https://127.0.0.1:$https/$probe" 404 "${curl_args[@]}"
    check_http "$base/$probe/SHA256SUMS.sha256.asc" 404 "${curl_args[@]}"
    printf 'probe\n' >"$dir/www/$probe"
    local hdrs
    hdrs=$(curl -sS -D - -o /dev/null -H 'Accept-Encoding: gzip, deflate, br' "${curl_args[@]}" "$base/$probe") \
        || die "curl GET $base/$probe failed"
    [[ $hdrs == *" 200"* ]] || die "GET $base/$probe: expected 200, got: ${hdrs%%$'\r'*}"
    if grep -qi '^content-encoding:' <<<"$hdrs"; then die "nginx sends Content-Encoding: $hdrs"; fi
    rm -f "$dir/www/$probe"
    if [[ ${E2E_NGINX_DAV_EXT:-1} != 0 ]]; then
        check_http "$base/" 207 "${curl_args[@]}" -X PROPFIND -H 'Depth: 1'
    fi
    if [[ -n $http ]]; then
        check_http "http://127.0.0.1:$http/$probe" 404 --noproxy '*'
    fi
    check_http "$base/private/$probe" 401 "${curl_args[@]}" -X PUT --data-binary probe
    check_http "$base/private/$probe" 201 "${curl_args[@]}" -X PUT --data-binary probe \
        -u "$WEBDAV_USER:$WEBDAV_PASSWORD"
    check_http "$base/private/$probe" 200 "${curl_args[@]}"
    check_http "$base/readonly/$probe" 403 "${curl_args[@]}" -X PUT --data-binary probe
    rm -f "$dir/www/private/$probe"
    trap - EXIT

    {
        echo "E2E_NGINX_DIR=$dir"
        echo "E2E_WWW=$dir/www"
        echo "E2E_CA=$dir/ca.crt"
        echo "E2E_HTTPS_PORT=$https"
        echo "E2E_HTTPS_URL=$base"
        echo "E2E_HTTP_PORT=$http"
        echo "E2E_HTTP_URL=${http:+http://127.0.0.1:$http}"
        echo "E2E_WEBDAV_USER=$WEBDAV_USER"
        echo "E2E_WEBDAV_PASSWORD=$WEBDAV_PASSWORD"
    } >"$dir/env"
    cat "$dir/env"
    log "nginx $(master_pid "$dir") serving $dir/www on $base${http:+ and http://127.0.0.1:$http}"
}

case ${1:-} in
    start) [[ $# -ge 2 && $# -le 4 ]] || usage; shift; do_start "$@" ;;
    stop)  [[ $# -eq 2 ]] || usage; do_stop "$2" ;;
    certs) [[ $# -eq 2 ]] || usage; do_certs "$2" ;;
    *) usage ;;
esac
