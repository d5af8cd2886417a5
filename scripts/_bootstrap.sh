# Sourced by scripts/*: make .venv with brsm and every extra installed, and the Debian
# packages the sandbox needs, on a fresh machine. Idempotent and quiet when all is there.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="${PYTHON:-python3}"

need_apt=()
command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ] || need_apt+=(openssh-server)
command -v ssh-keygen >/dev/null 2>&1 || need_apt+=(openssh-client)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "bootstrap: installing ${need_apt[*]} from Debian" >&2
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null 2>&1 \
      || echo "bootstrap: could not install ${need_apt[*]}; the sandbox falls back to an asyncssh server" >&2
  else
    echo "bootstrap: ${need_apt[*]} missing and not root; the sandbox falls back to an asyncssh server" >&2
  fi
fi

stamp="$VENV/.brsm-installed"
if [ ! -x "$VENV/bin/python" ]; then
  echo "bootstrap: creating $VENV" >&2
  "$PY" -m venv "$VENV"
fi
if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
  echo "bootstrap: installing brsm and its dependencies into .venv" >&2
  "$VENV/bin/pip" install -q --disable-pip-version-check -e "$ROOT[sandbox,test]" 2>&1 | grep -v "^WARNING: Location" >&2 || true
  "$VENV/bin/python" -c "import brsm, journal, transitions, asyncssh, nebula3, rocksdict, moto, hypothesis" \
    || { echo "bootstrap: installation failed" >&2; exit 1; }
  touch "$stamp"
fi
export PATH="$VENV/bin:$PATH"
