#!/bin/sh
# sshca-krl-sync: fetch the sshca key revocation list (KRL) and install it
# where sshd's RevokedKeys option reads it.
#
# Written by `sshca hostconfig render`. The settings below are defaults;
# the environment overrides them (the systemd service reads
# /etc/default/sshca-krl-sync). Needs sh, curl, ssh-keygen, cmp and coreutils.
#
# A download is checked with `ssh-keygen -Q` against a probe key that no KRL
# revokes, and goes live by rename(2) in the KRL's own directory, so sshd
# never reads a partial or invalid file. When the fetch or the check fails,
# the last good KRL stays in place and the script exits 1. Messages go to
# stderr, which systemd sends to the journal.

set -u

: "${SSHCA_SERVER:=@SERVER@}"
: "${SSHCA_KRL:=@KRL@}"
: "${SSHCA_KRL_PROBE:=@PROBE@}"
: "${SSHCA_KRL_MAX_AGE:=@MAX_AGE@}"
: "${SSHCA_CA_BUNDLE:=@CA_BUNDLE@}"
: "${SSHCA_FETCH_TIMEOUT:=30}"

log() {
    printf 'sshca-krl-sync: %s\n' "$*" >&2
}

# Log an error when the live KRL is missing or older than SSHCA_KRL_MAX_AGE
# seconds: a KRL that stopped updating lets revoked certificates in.
check_age() {
    if [ ! -f "$SSHCA_KRL" ]; then
        log "error: $SSHCA_KRL is missing, so sshd rejects every key until a sync succeeds"
        return
    fi

    modified=$(stat -c %Y "$SSHCA_KRL") || return
    age=$(( $(date +%s) - modified ))
    if [ "$age" -gt "$SSHCA_KRL_MAX_AGE" ]; then
        log "error: $SSHCA_KRL was last updated ${age}s ago, more than the maximum age of ${SSHCA_KRL_MAX_AGE}s"
    fi
}

fail() {
    log "error: $*; keeping the current KRL"
    check_age
    exit 1
}

command -v curl >/dev/null 2>&1 || fail "curl is not installed"
command -v ssh-keygen >/dev/null 2>&1 || fail "ssh-keygen is not installed"
[ -r "$SSHCA_KRL_PROBE" ] || fail "the probe key $SSHCA_KRL_PROBE is missing or unreadable"

url="${SSHCA_SERVER%/}/v1/krl"
krl_dir=$(dirname "$SSHCA_KRL")

# The temporary file sits in the KRL's directory so that mv is an atomic
# rename on one file system.
tmp=$(mktemp "$krl_dir/.revoked.krl.XXXXXX") || fail "cannot create a temporary file in $krl_dir"
trap 'rm -f "$tmp"' EXIT
trap 'rm -f "$tmp"; exit 1' HUP INT TERM

set -- --fail --silent --show-error --proto =http,https --max-time "$SSHCA_FETCH_TIMEOUT" --output "$tmp"
if [ -n "$SSHCA_CA_BUNDLE" ]; then
    set -- "$@" --cacert "$SSHCA_CA_BUNDLE"
fi
if ! curl "$@" "$url"; then
    fail "fetching $url failed"
fi

# ssh-keygen -Q exits 0 when the probe is not revoked, 1 when it is, and 255
# when the file is not a valid KRL (OpenSSH 9.2).
check_output=$(ssh-keygen -Q -f "$tmp" "$SSHCA_KRL_PROBE" 2>&1)
status=$?
case $status in
    0) ;;
    1) fail "the KRL from $url revokes the probe key $SSHCA_KRL_PROBE" ;;
    *) fail "the file from $url is not a valid KRL: $check_output" ;;
esac

if [ -f "$SSHCA_KRL" ] && cmp -s "$tmp" "$SSHCA_KRL"; then
    # Refresh the time stamp so that the age check measures the last good sync.
    touch "$SSHCA_KRL" || fail "cannot update the time stamp of $SSHCA_KRL"
    log "KRL from $url is unchanged"
    exit 0
fi

chmod 0644 "$tmp" || fail "cannot set the mode of $tmp"
mv -f "$tmp" "$SSHCA_KRL" || fail "cannot replace $SSHCA_KRL"
log "installed the new KRL from $url ($(wc -c < "$SSHCA_KRL") bytes)"
