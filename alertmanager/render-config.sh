#!/bin/sh
# Render alertmanager.yml.tmpl with values from the environment.
#
# Alertmanager 0.25 does not expand environment variables in its
# configuration, and envsubst is not everywhere: this is plain POSIX sh + sed.
#
# Usage: render-config.sh [TEMPLATE [OUTPUT]]
#   TEMPLATE  default: alertmanager.yml.tmpl next to this script
#   OUTPUT    default: standard output. A file is written atomically; mode
#             0600 when SMTP_AUTH_PASSWORD is set (readable by the owner only:
#             mind the user Alertmanager runs as), else as the umask says.
#
# Environment:
#   SMTP_SMARTHOST         required  host:port of the SMTP server (mailcatcher:1025)
#   ALERT_EMAIL_FROM       required  sender address
#   ALERT_EMAIL_TO         required  recipients of pages (comma-separated)
#   ALERT_EMAIL_TO_TICKET  optional  recipients of tickets (default: ALERT_EMAIL_TO)
#   SMTP_AUTH_USERNAME     optional  empty: no SMTP AUTH
#   SMTP_AUTH_PASSWORD     optional
#   SMTP_REQUIRE_TLS       optional  true (default) or false (mail catchers)
#
# Example (the docker-compose mail catcher; this renders alertmanager.yml):
#   SMTP_SMARTHOST=mailcatcher:1025 ALERT_EMAIL_FROM=alertmanager@ci-slo-exporter.localhost \
#   ALERT_EMAIL_TO=ci-team@ci-slo-exporter.localhost SMTP_REQUIRE_TLS=false \
#   alertmanager/render-config.sh alertmanager/alertmanager.yml.tmpl alertmanager/alertmanager.yml
set -eu

me=render-config.sh
dir=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
tmpl=${1:-$dir/alertmanager.yml.tmpl}
out=${2:-}

die() { echo "$me: $*" >&2; exit 2; }

[ -r "$tmpl" ] || die "cannot read template $tmpl"
[ -n "${SMTP_SMARTHOST:-}" ] || die "SMTP_SMARTHOST is not set (host:port of the SMTP server)"
[ -n "${ALERT_EMAIL_FROM:-}" ] || die "ALERT_EMAIL_FROM is not set (sender address)"
[ -n "${ALERT_EMAIL_TO:-}" ] || die "ALERT_EMAIL_TO is not set (recipient address)"
ALERT_EMAIL_TO_TICKET=${ALERT_EMAIL_TO_TICKET:-$ALERT_EMAIL_TO}
SMTP_AUTH_USERNAME=${SMTP_AUTH_USERNAME:-}
SMTP_AUTH_PASSWORD=${SMTP_AUTH_PASSWORD:-}
SMTP_REQUIRE_TLS=${SMTP_REQUIRE_TLS:-true}
case $SMTP_REQUIRE_TLS in
  true | false) ;;
  *) die "SMTP_REQUIRE_TLS must be true or false, not '$SMTP_REQUIRE_TLS'" ;;
esac

# A value goes inside a single-quoted YAML scalar ('' stands for '), and then
# into the replacement of a sed s||| command (\, & and | are special there).
esc() {
  case $2 in
    *'
'*) die "$1 must not contain a newline" ;;
  esac
  printf '%s\n' "$2" | sed -e "s/'/''/g" -e 's/[\\&|]/\\&/g'
}

script=
for var in SMTP_SMARTHOST ALERT_EMAIL_FROM ALERT_EMAIL_TO ALERT_EMAIL_TO_TICKET \
  SMTP_AUTH_USERNAME SMTP_AUTH_PASSWORD SMTP_REQUIRE_TLS; do
  eval "value=\${$var}"
  # shellcheck disable=SC2154 # value is set by the eval above
  script="${script}s|\\\${$var}|$(esc "$var" "$value")|g
"
done

render() {
  echo "# GENERATED from alertmanager.yml.tmpl by alertmanager/render-config.sh:"
  echo "# edit the template (it documents the placeholders) and render again."
  # Drop the template's leading comment block, then fill in the placeholders.
  sed -e '1,/^[^#]/{/^#/d;}' "$tmpl" | sed -e "$script"
}

if [ -z "$out" ]; then
  render
else
  [ -z "$SMTP_AUTH_PASSWORD" ] || umask 077
  tmp="$out.tmp.$$"
  trap 'rm -f "$tmp"' EXIT
  render >"$tmp"
  if grep -n '\${[A-Z_][A-Z_]*}' "$tmp" >&2; then
    die "placeholders left unrendered in $out (above)"
  fi
  mv -f "$tmp" "$out"
  trap - EXIT
fi
