# Shared settings for the project's scripts. Sourced, not run.
# Build outputs live outside the clone so a fresh clone reuses them and the repo stays clean.
export HV_CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/hyperion-vault"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HV_CACHE/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export REPO_ROOT

step() { printf '\n==> %s\n' "$*"; }

# A free port below the kernel's ephemeral range, so the ports testenv takes with bind(0) while it
# starts can never be the one picked here (that collision happened once).
free_port() { python3 -c '
import random, socket
lo = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
for _ in range(200):
    p = random.randrange(max(1024, lo - 12000), lo)
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p)); print(p); break
    except OSError:
        pass
    finally:
        s.close()'; }
