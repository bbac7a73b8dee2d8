#!/usr/bin/env bash
# The whole wattline test suite, exactly as CI runs it (.ci/run calls this script).
# It installs what it needs from the registries this kind of machine reaches, then runs
# formatting, lints, every test (unit, integration, doc) and a bounded fuzz smoke run.
# Nothing is skipped silently: a test that needs a broker, a database or a browser runs
# against the real one or fails.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

# System packages the tests use. Debian names; installed only when missing.
missing=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v socat >/dev/null 2>&1 || missing+=(socat)   # PZEM-004T RTU tests over a pty pair
command -v curl >/dev/null 2>&1 || missing+=(curl)     # the HTTPS test checks the site as a user would
[ -x /usr/bin/chromium ] || missing+=(chromium)          # browser tests (server/tests/browser)
[ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
command -v pdftotext >/dev/null 2>&1 || missing+=(poppler-utils)  # bill PDFs are checked by extracting their text
if [ ${#missing[@]} -gt 0 ]; then
  step "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Python test peers: the Gurux DLMS library is the independent implementation the DLMS
# interoperability tests talk to (used only as a test peer, never shipped).
if ! python3 -c 'import gurux_dlms' >/dev/null 2>&1; then
  step "installing gurux-dlms (DLMS interoperability test peer)"
  python3 -m pip install --quiet --disable-pip-version-check 'gurux-dlms==1.0.203'
fi
# A real SMTP server for the notification tests (mail is delivered to it, not to a mock).
if ! python3 -c 'import aiosmtpd' >/dev/null 2>&1; then
  step "installing aiosmtpd (local SMTP sink for the notification tests)"
  python3 -m pip install --quiet --disable-pip-version-check 'aiosmtpd==1.4.6'
fi

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "tests"
if command -v cargo-nextest >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi

step "doc tests"
cargo test --workspace --doc --locked

if [ -d fuzz ]; then
  step "fuzz smoke run"
  bash scripts/fuzz.sh smoke
fi
