"""Schemathesis hooks for the schemathesis check, checks/schemathesis.py (loaded through SCHEMATHESIS_HOOKS).

Two things keep a fuzzing run from damaging the instance it shares with the other suites:

* Requests that do not carry the run's admin token — schemathesis's `ignored_auth` probes, which
  drop or replace the credentials on purpose — leave from a fresh random 127.x.y.z source address
  each. Every failed authentication counts towards the per-client lockout (VAULT_AUTH_MAX_FAILURES,
  10 by default, stored in PostgreSQL and shared by replicas); sent from 127.0.0.1, two probes per
  secured operation would lock 127.0.0.1 out for 15 minutes, and from then on every call of this
  run and of the suites after it would be 429. Each probe address fails once and is never used again.
* The admin token this run authenticates with (`bootstrap-admin`, the one every suite reads from
  HV_SCHEMATHESIS_ADMIN_TOKEN) is never revoked: `DELETE /v1/tokens/bootstrap-admin`, generated or
  reached through a link from `GET /v1/tokens`, is sent for a token name that does not exist instead.

And one thing keeps Hypothesis itself from crashing the run: nothing is reported to its
targeted phase. Schemathesis steers fuzzing towards accepted inputs through `hypothesis.target`,
and Hypothesis 6.170.15's optimiser then died with `IndexError` in `hill_climb` (operations that
mostly answer 400: rotate, versions) in 2 of 3 CI runs, leaving that operation's fuzzing
unfinished. With no target observed, the optimiser has nothing to climb and never runs. This is
done here rather than with a settings profile: schemathesis lets a loaded profile override its own
configuration (health checks, randomisation), which changed more than the one phase.
"""
import os
import random

import hypothesis
import requests.adapters
import schemathesis


def _no_target(observation, *, label=""):
    """`hypothesis.target` that records nothing (see the module docstring)."""
    return observation


hypothesis.target = _no_target

# Hypothesis reseeds the `random` module for every test case: use the OS source, or the addresses repeat.
RNG = random.SystemRandom()
ADMIN = os.environ["HV_SCHEMATHESIS_ADMIN_TOKEN"]
PROTECTED_TOKENS = {"bootstrap-admin"}
_send = requests.adapters.HTTPAdapter.send


def _send_from_fresh_source(self, request, *args, **kwargs):
    if request.headers.get("Authorization") == "Bearer " + ADMIN:
        return _send(self, request, *args, **kwargs)
    source = f"127.{RNG.randint(1, 254)}.{RNG.randint(1, 254)}.{RNG.randint(2, 254)}"
    adapter = requests.adapters.HTTPAdapter()
    adapter.init_poolmanager(1, 1, source_address=(source, 0))
    return _send(adapter, request, *args, **kwargs)


requests.adapters.HTTPAdapter.send = _send_from_fresh_source


@schemathesis.hook
def before_call(context, case, kwargs):
    if case.operation.method.upper() == "DELETE" and case.operation.path == "/v1/tokens/{name}":
        if (case.path_parameters or {}).get("name") in PROTECTED_TOKENS:
            case.path_parameters["name"] = "st-protected-" + "".join(RNG.choices("abcdef0123456789", k=8))
