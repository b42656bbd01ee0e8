"""How the product under test is started, stopped, killed and restarted — the one place that knows.

Today it is `LocalProcesses`: a private `make run` instance (scripts/run.sh) in its own run dir,
the controller and the API as local processes started by the launchers scripts/run.sh writes
(run/<component>.start, pid in run/<component>.pid). When the product runs as pods on a node
(issue 14) another class with the same methods takes its place; the checks only use these:

  up() / down()             the whole instance (the orchestrator)
  identity(c)               what says "the same process as before" (a pid; a pod UID later); None if gone
  kill(c) / start(c)        SIGKILL / start again exactly as at first (c: "controller" or "api")
  ready(c) / wait_ready(c)  the API answers /readyz 200; the controller leads (its leader gauge is 1)
  setting(c, VAR)           a setting the component was started with
  logs()                    every log file of the product
  extra_api(env, label)     one more API process with some settings changed (the caller stops it)
"""
import os
import random
import shlex
import signal
import socket
import subprocess
import time

from .api import Api
from .environment import ROOT, TestEnv


def free_port():
    """A free port below the kernel's ephemeral range (as scripts/lib.sh free_port): ports testenv
    takes with bind(0) while it starts can never be this one."""
    lo = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
    for _ in range(200):
        p = random.randrange(max(1024, lo - 12000), lo)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", p))
                return p
            except OSError:
                pass
    raise RuntimeError("no free port")


class LocalProcesses:
    def __init__(self, run_dir, api_port, metrics_port):
        self.run_dir, self.api_port, self.metrics_port = run_dir, int(api_port), int(metrics_port)
        self.run = os.path.join(run_dir, "run")
        self.env = TestEnv(run_dir)
        self._role_pw = None

    @classmethod
    def from_environ(cls):
        return cls(os.environ["HV_RUN_DIR"], os.environ["HV_API_PORT"], os.environ.get("HV_METRICS_PORT", "8080"))

    def environ(self):
        """What a process needs to find this instance (from_environ reads it back)."""
        return {"HV_RUN_DIR": self.run_dir, "HV_API_PORT": str(self.api_port),
                "HV_METRICS_PORT": str(self.metrics_port)}

    # ------------------------------------------------------------ the whole instance
    def up(self, log, controller_env=""):
        """Starts the instance (scripts/run.sh, output to `log`); False if it did not come up."""
        extra = " ".join(x for x in (os.environ.get("HV_CONTROLLER_ENV", ""), controller_env) if x)
        with open(log, "w") as out:
            return subprocess.run([os.path.join(ROOT, "scripts", "run.sh")], stdout=out, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL,
                                  env={**os.environ, **self.environ(), "HV_CONTROLLER_ENV": extra}).returncode == 0

    def down(self):
        subprocess.run([os.path.join(ROOT, "scripts", "run.sh"), "down"], env={**os.environ, **self.environ()},
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)

    def api(self):
        return Api(self.api_port, open(os.path.join(self.run, "admin-token")).read().strip())

    # ------------------------------------------------------------ one component
    def identity(self, component):
        try:
            pid = int(open(os.path.join(self.run, f"{component}.pid")).read().strip())
            with open(f"/proc/{pid}/stat") as f:  # a zombie is gone too
                return pid if f.read().split(")")[-1].split()[0] != "Z" else None
        except (OSError, ValueError):
            return None

    def kill(self, component):
        """SIGKILL; False if it was not running. Returns once the process is gone (at most 2 s)."""
        pid = self.identity(component)
        if not pid:
            return False
        os.kill(pid, signal.SIGKILL)
        for _ in range(200):
            if not self.identity(component):
                break
            time.sleep(0.01)
        return True

    def start(self, component):
        # The launchers take AWS_* from the caller's environment as scripts/run.sh had them from
        # the testenv env file: give them the same.
        subprocess.run(["bash", os.path.join(self.run, f"{component}.start")], check=True, stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **self.env.reload()})

    def ready(self, component):
        if component == "api":
            return self.api().ready()
        return Api(self.metrics_port, "").metrics(timeout=2).get("hyperion_vault_controller_leader") == 1

    def wait_ready(self, component, timeout=60):
        """False after `timeout`, or at once if the process is gone."""
        end = time.time() + timeout
        while time.time() < end:
            if self.ready(component):
                return True
            if not self.identity(component):
                return False
            time.sleep(0.05)
        return False

    def launcher(self, component):
        """(settings, binary) of the component's launcher: `env K=V ... nohup BIN >>log ...`."""
        words = shlex.split(next(line for line in open(os.path.join(self.run, f"{component}.start"))
                                 if line.startswith("env ")))
        settings = dict(w.split("=", 1) for w in words[1:words.index("nohup")])
        return settings, words[words.index("nohup") + 1]

    def setting(self, component, var):
        return self.launcher(component)[0].get(var)

    def logs(self):
        return [os.path.join(self.run, f) for f in sorted(os.listdir(self.run)) if f.endswith(".log")]

    def log(self, component):
        return os.path.join(self.run, f"{component}.log")

    # ------------------------------------------------------------ extra API processes
    def extra_api(self, overrides, label):
        """One more API process: the API's binary and settings with `overrides`, on a free port,
        with its own database role (the API role's password is kept nowhere); log run/api-<label>.log.
        Returns an ExtraApi whose port is None if it did not become ready within 30 s."""
        if self._role_pw is None:
            self._role_pw = os.urandom(16).hex()
            rc, _, err = self.env.psql(self.env.primary_port() or self.env["PG_PRIMARY_PORT"], (
                "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname='vault_api_rel') THEN CREATE ROLE "
                f"vault_api_rel LOGIN; END IF; END $$; ALTER ROLE vault_api_rel PASSWORD '{self._role_pw}'; "
                "SELECT vault.grant_service_role('vault_api_rel');"))
            if rc != 0:
                raise RuntimeError(f"database role for extra API processes: {err}")
        settings, binary = self.launcher("api")
        settings.pop("VAULT_BOOTSTRAP_TOKEN", None)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("VAULT_")}
        env.update(settings, VAULT_PG_USER="vault_api_rel", VAULT_PG_PASSWORD=self._role_pw,
                   VAULT_API_LISTEN=f"127.0.0.1:{port}", RUST_LOG="info", **overrides)
        log = os.path.join(self.run, f"api-{label}.log")
        proc = subprocess.Popen([binary], env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        extra = ExtraApi(proc, port, log)
        for _ in range(120):
            if proc.poll() is not None:
                break
            if self.api().ready(port=port):
                return extra
            time.sleep(0.25)
        print(open(log).read()[-2000:])
        extra.port = None
        return extra


class ExtraApi:
    def __init__(self, proc, port, log):
        self.proc, self.port, self.log = proc, port, log

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
