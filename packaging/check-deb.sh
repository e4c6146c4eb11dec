#!/bin/sh
# Checks the built package (packaging/build-deb.sh first): its contents, conffiles and
# units, then installs, upgrades, removes and purges it in a temporary root with
# `dpkg --root` (maintainer scripts run chrootless with DPKG_ROOT set), checking that
# the college's data survives an upgrade and a remove, and only purge deletes it.
set -eu
cd "$(dirname "$0")/.."
deb=$(ls target/debian/kasip-agent_*.deb | head -n 1)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "check-deb: $*" >&2; exit 1; }

dpkg-deb -c "$deb" > "$work/contents"
for path in ./usr/bin/kasip-agent ./usr/bin/kasip-kiosk ./usr/bin/kasip-registry \
    ./etc/kasip/config.toml ./lib/systemd/system/kasip-agent.service \
    ./lib/systemd/system/kasip-kiosk.service ./usr/share/doc/kasip-agent/README.md; do
    grep -q " $path\$" "$work/contents" || fail "$path is not in the package"
done
grep -q '^-rw-r----- .* ./etc/kasip/config.toml$' "$work/contents" || fail "config.toml must be 0640"
dpkg-deb -e "$deb" "$work/control"
grep -qx /etc/kasip/config.toml "$work/control/conffiles" || fail "config.toml is not a conffile"
for script in postinst prerm postrm; do
    [ -x "$work/control/$script" ] || fail "no $script"
done
grep -q '^Depends:.*adduser' "$work/control/control" || fail "must depend on adduser"

root="$work/root"
mkdir -p "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates"
touch "$root/var/lib/dpkg/status" "$root/var/lib/dpkg/available"
install_deb() {
    dpkg --root="$root" --force-script-chrootless --force-depends --log=/dev/null -i "$deb" >/dev/null
}
agent() {
    "$root/usr/bin/kasip-agent" --data-dir "$root/var/lib/kasip" --config "$root/etc/kasip/config.toml" "$@"
}
install_deb
[ -f "$root/var/lib/kasip/agent.db" ] || fail "install did not initialise /var/lib/kasip"
[ "$(stat -c %a "$root/var/lib/kasip")" = 700 ] || fail "/var/lib/kasip must be 0700"
[ "$(stat -c %a "$root/var/lib/kasip/agent-key.pem")" = 600 ] || fail "the key must be 0600"
[ ! -e "$root/var/lib/kasip/config.toml" ] || fail "the config belongs in /etc/kasip"
agent demo >/dev/null 2>&1
key=$(agent status --json | grep key_thumbprint)
marks=$(sqlite3 "$root/var/lib/kasip/agent.db" 'SELECT COUNT(*) FROM attendance_events')
[ "$marks" -gt 0 ] || fail "the demo wrote no marks"
# The test clock exists only in builds for tests: the packaged agent ignores the variable
# and keeps the machine's time (a clock file at 2000-01-01 would backdate every mark).
echo 946684800 > "$work/clock"
clock=$(KASIP_UNSAFE_CLOCK_FILE="$work/clock" agent status --json 2>/dev/null \
    | sed -n 's/.*"clock": *\([0-9]*\).*/\1/p')
[ -n "$clock" ] || fail "status --json shows no clock"
[ $(( clock - $(date +%s) )) -lt 120 ] && [ $(( $(date +%s) - clock )) -lt 120 ] \
    || fail "the packaged agent read KASIP_UNSAFE_CLOCK_FILE (clock $clock)"
KASIP_UNSAFE_CLOCK_FILE="$work/clock" agent status --json 2>/dev/null | grep -q '"test_clock_build": *false' \
    || fail "the packaged agent is a build for tests"
echo '# edited by IT' >> "$root/etc/kasip/config.toml"

install_deb   # the same version again: prerm upgrade, postinst configure (migrate)
[ "$(agent status --json | grep key_thumbprint)" = "$key" ] || fail "the upgrade changed the key"
[ "$(sqlite3 "$root/var/lib/kasip/agent.db" 'SELECT COUNT(*) FROM attendance_events')" = "$marks" ] \
    || fail "the upgrade lost marks"
grep -q '^# edited by IT$' "$root/etc/kasip/config.toml" || fail "the upgrade replaced the edited config"
agent verify >/dev/null || fail "the chain does not verify after the upgrade"

dpkg --root="$root" --force-script-chrootless --log=/dev/null -r kasip-agent >/dev/null
[ -f "$root/var/lib/kasip/agent.db" ] || fail "remove deleted the data"
[ -f "$root/etc/kasip/config.toml" ] || fail "remove deleted the config"
[ ! -e "$root/usr/bin/kasip-agent" ] || fail "remove left the program"

dpkg --root="$root" --force-script-chrootless --log=/dev/null -P kasip-agent >/dev/null
[ ! -e "$root/var/lib/kasip" ] || fail "purge kept /var/lib/kasip"
[ ! -e "$root/etc/kasip" ] || fail "purge kept /etc/kasip"

for unit in kasip-agent kasip-kiosk; do
    score=$(systemd-analyze security --offline=yes "packaging/systemd/$unit.service" 2>&1 \
        | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
    [ -n "$score" ] || fail "no security score for $unit"
    awk -v score="$score" 'BEGIN { exit !(score <= 2.0) }' || fail "$unit exposure $score > 2.0"
    echo "check-deb: $unit exposure $score"
done
echo "check-deb: $deb ok (contents, conffile, install, upgrade keeps data, remove keeps data, purge deletes)"
