#!/usr/bin/env bash
# Installs the official RocketMQ 5 clients that tests/tests/clients.rs drives, at the versions
# pinned here: rocketmq-python-client 5.1.2 (PyPI, every package pinned with its hash) into a
# virtualenv at $COMET_CLIENTS_DIR/python (default: target/clients/python), and
# rocketmq-client-nodejs 1.0.8 (npm, package-lock.json) into tests/clients/node/node_modules.
# Needs CPython 3.11 with pip and venv, Node 20 and npm. Idempotent: a finished install is
# reused (it is keyed by the hash of the pin files).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
clients="$root/tests/clients"
dir="${COMET_CLIENTS_DIR:-$root/target/clients}"
python="${PYTHON:-python3}"

venv="$dir/python"
stamp="$venv/.installed"
want="$(sha256sum "$clients/python/requirements.txt" | cut -d' ' -f1)"
if [[ "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
    rm -rf "$venv"
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
        --require-hashes --only-binary :all: -r "$clients/python/requirements.txt"
    echo "$want" > "$stamp"
fi
"$venv/bin/python" -c 'import importlib.metadata as m; print("python client", m.version("rocketmq-python-client"))'

node="$clients/node"
stamp="$node/node_modules/.installed"
want="$(cat "$node/package.json" "$node/package-lock.json" | sha256sum | cut -d' ' -f1)"
if [[ "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
    (cd "$node" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
    echo "$want" > "$stamp"
fi
node -e 'console.log("node client", require(process.argv[1]).version)' \
    "$node/node_modules/rocketmq-client-nodejs/package.json"
