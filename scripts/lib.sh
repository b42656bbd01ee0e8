# Shared settings for the project's scripts. Sourced, not run.
# Build outputs live outside the clone so a fresh clone reuses them and the repo stays clean.
export HV_CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/hyperion-vault"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HV_CACHE/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export REPO_ROOT

step() { printf '\n==> %s\n' "$*"; }
