"""The rotation schedule as the restarts check replays it, in integer microseconds.

The product's schedule is `core/src/schedule.rs`; store/src/secrets.rs `rotate` applies it. This is
a model of both, and it is checked against golden vectors the core crate prints
(core/examples/schedule_vectors.rs) before it is used: `mismatches(core_vectors())` must be empty."""
import hashlib
import json
import os
import subprocess

from .environment import ROOT

MAX_SPREAD_US = 300_000_000
SPREAD_DIVISOR = 10


def spread_us(identity, interval_us):
    window = min(interval_us // SPREAD_DIVISOR, MAX_SPREAD_US)
    if window == 0:
        return 0
    return int.from_bytes(hashlib.sha256(identity.encode()).digest()[:8], "big") % window


def first_rotation(created, interval_us, identity):
    return created + interval_us + spread_us(identity, interval_us)


def is_due(slot, now):
    return now >= slot


def next_after(scheduled, interval_us, now):
    elapsed = now - scheduled
    return scheduled + (1 if elapsed < 0 else elapsed // interval_us + 1) * interval_us


def after_version(slot, interval_us, identity, created):
    """(scheduled, next slot) for a version created at `created` while the database held `slot`:
    at or after the slot it served that slot and the schedule stays anchored; before it, it was
    forced and the schedule re-anchors on its creation."""
    if is_due(slot, created):
        return True, next_after(slot, interval_us, created)
    return False, first_rotation(created, interval_us, identity)


def core_vectors():
    """The golden vectors of core/examples/schedule_vectors.rs (built and run with cargo)."""
    out = subprocess.run(["cargo", "run", "-q", "--locked", "-p", "hyperion-vault-core", "--example",
                          "schedule_vectors"], cwd=ROOT, capture_output=True, text=True, check=True,
                         env={**os.environ, "CARGO_TERM_COLOR": "never"}).stdout
    return json.loads(out)


def mismatches(vectors):
    """Every vector this model computes differently from the core crate."""
    bad = []
    for identity, iv, want in vectors["spread"]:
        if spread_us(identity, iv) != want:
            bad.append(f"spread({identity!r}, {iv}) = {spread_us(identity, iv)}, core {want}")
    for created, iv, identity, want in vectors["first_rotation"]:
        if first_rotation(created, iv, identity) != want:
            bad.append(f"first_rotation({created}, {iv}, {identity!r}) = {first_rotation(created, iv, identity)}, "
                       f"core {want}")
    for scheduled, iv, now, want in vectors["next_after"]:
        if next_after(scheduled, iv, now) != want:
            bad.append(f"next_after({scheduled}, {iv}, {now}) = {next_after(scheduled, iv, now)}, core {want}")
    for slot, now, want in vectors["is_due"]:
        if is_due(slot, now) != want:
            bad.append(f"is_due({slot}, {now}) = {is_due(slot, now)}, core {want}")
    return bad
