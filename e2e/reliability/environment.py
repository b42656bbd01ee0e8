"""The test environment the product runs on (e2e/testenv: kube-apiserver + etcd, the PostgreSQL
pair, the KMS): its env file, its fault commands and psql."""
import os
import subprocess
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


class TestEnv:
    def __init__(self, state_dir):
        self.dir = state_dir
        self._vars = None

    def reload(self):
        """(Re-)reads the env file: `pg-rejoin` swaps the PostgreSQL roles in it."""
        env = {}
        for line in open(os.path.join(self.dir, "env")):
            line = line.strip().removeprefix("export ")
            if "=" in line and not line.startswith("#"):
                k, v = line.split("=", 1)
                env[k] = v.strip("'\"")
        self._vars = env
        return env

    def __getitem__(self, key):
        return (self._vars or self.reload())[key]

    def get(self, key, default=None):
        return (self._vars or self.reload()).get(key, default)

    def testenv(self, *args, timeout=180):
        """(exit status, output, start, end) of `testenv <args>` (times: time.time())."""
        t0 = time.time()
        p = subprocess.run([os.path.join(ROOT, "e2e", "testenv", "testenv"), *args], capture_output=True, text=True,
                           env={**os.environ, "HV_TESTENV_DIR": self.dir}, timeout=timeout, stdin=subprocess.DEVNULL)
        return p.returncode, (p.stdout + p.stderr).strip(), t0, time.time()

    def psql(self, port, sql, db=None):
        """(exit status, output, errors) of one statement as the superuser."""
        p = subprocess.run([os.path.join(self["PG_BIN_DIR"], "psql"), "-X", "-qtA", "-v", "ON_ERROR_STOP=1",
                            "-h", self["PG_HOST"], "-p", str(port), "-U", self["PG_SUPERUSER"],
                            "-d", db or self["PG_DATABASE"], "-c", sql],
                           env={**os.environ, "PGPASSWORD": self["PG_SUPERPASSWORD"], "PGCONNECT_TIMEOUT": "3",
                                "PGOPTIONS": "-c client_min_messages=warning"},
                           capture_output=True, text=True, timeout=30)
        return p.returncode, p.stdout.strip(), p.stderr.strip()

    def in_recovery(self, port):
        """True for a standby, False for a primary, None if it does not answer."""
        rc, out, _ = self.psql(port, "select pg_is_in_recovery()")
        return {"f": False, "t": True}.get(out) if rc == 0 else None

    def ports(self):
        return [int(self["PG_PRIMARY_PORT"]), int(self["PG_STANDBY_PORT"])]

    def primary_port(self):
        """The node that answers as a primary now (a failover may have moved it)."""
        return next((p for p in self.ports() if self.in_recovery(p) is False), None)
