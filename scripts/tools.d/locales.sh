#!/usr/bin/env bash
# Test-only: a decimal-comma locale (de_DE.UTF-8), so the tests can prove that loading a bundle
# does not depend on the process locale (German plants run German locales). Compiled with
# localedef from Debian's `locales` package; nothing else changes. Idempotent.
set -euo pipefail
if locale -a 2>/dev/null | grep -qi '^de_DE\.utf-\?8$'; then
    exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
if ! command -v localedef >/dev/null 2>&1 || [ ! -f /usr/share/i18n/locales/de_DE ]; then
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get install -y --no-install-recommends locales >/dev/null 2>&1 || {
        $SUDO apt-get update -qq >/dev/null
        $SUDO apt-get install -y --no-install-recommends locales >/dev/null
    }
fi
$SUDO localedef -i de_DE -f UTF-8 de_DE.UTF-8
echo "locales.sh: de_DE.UTF-8 installed"
