"""The Kubernetes API of the test environment, over HTTPS with the admin kubeconfig's credentials."""
import base64
import http.client
import json
import os
import re
import ssl
import tempfile
import time

import yaml

GROUP = "vault.hyperiondb.io/v1alpha1"
ROTATE_NOW = "vault.hyperiondb.io/rotate-now"


class Kube:
    def __init__(self, kubeconfig):
        cfg = yaml.safe_load(open(kubeconfig))
        ctx = next(c["context"] for c in cfg["contexts"] if c["name"] == cfg.get("current-context"))
        cluster = next(c["cluster"] for c in cfg["clusters"] if c["name"] == ctx["cluster"])
        user = next(u["user"] for u in cfg["users"] if u["name"] == ctx["user"])
        self.token = user.get("token")
        with tempfile.TemporaryDirectory(prefix="hv-kube-") as tmp:  # key material only while it is loaded
            def material(src, key, name):
                if src.get(key):
                    return src[key]
                path = os.path.join(tmp, name)
                with open(path, "wb") as f:
                    f.write(base64.b64decode(src[key + "-data"]))
                return path

            self.ssl = ssl.create_default_context(cafile=material(cluster, "certificate-authority", "ca.crt"))
            if user.get("client-certificate-data") or user.get("client-certificate"):
                self.ssl.load_cert_chain(material(user, "client-certificate", "c.crt"),
                                         material(user, "client-key", "c.key"))
        m = re.match(r"https://([^:/]+):(\d+)", cluster["server"])
        self.host, self.port = m.group(1), int(m.group(2))

    def req(self, method, path, body=None, ctype="application/json", timeout=10):
        """(status, parsed JSON or None); transport errors raise OSError / HTTPException."""
        conn = http.client.HTTPSConnection(self.host, self.port, context=self.ssl, timeout=timeout)
        h = {"Accept": "application/json", **({"Authorization": "Bearer " + self.token} if self.token else {})}
        data = None
        if body is not None:
            data, h["Content-Type"] = json.dumps(body).encode(), ctype
        try:
            conn.request(method, path, data, h)
            r = conn.getresponse()
            raw = r.read()
        finally:
            conn.close()
        try:
            return r.status, json.loads(raw) if raw else None
        except ValueError:
            return r.status, None

    def retry(self, method, path, body=None, ctype="application/json", deadline=60):
        """req(), retried on transport errors and 5xx until `deadline` seconds: (None, None) if it never answered."""
        end = time.time() + deadline
        while True:
            try:
                st, j = self.req(method, path, body, ctype)
                if st < 500:
                    return st, j
            except (OSError, http.client.HTTPException):
                st, j = None, None
            if time.time() > end:
                return st, j
            time.sleep(0.3)

    def ready(self):
        """The apiserver answers /readyz with 200."""
        try:
            return self.req("GET", "/readyz", timeout=2)[0] == 200
        except (OSError, http.client.HTTPException):
            return False

    # ------------------------------------------------------------ what the checks do with it
    def create_namespace(self, ns):
        return self.retry("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                         "metadata": {"name": ns}})[0]

    def delete_namespace(self, ns):
        """Deletion starts; it never finishes here (no kube-controller-manager), the namespace stays empty."""
        return self.retry("DELETE", f"/api/v1/namespaces/{ns}")[0]

    def vaultsecrets_path(self, ns, name=""):
        return f"/apis/{GROUP}/namespaces/{ns}/vaultsecrets" + (f"/{name}" if name else "")

    def create_vaultsecret(self, ns, name, spec):
        return self.retry("POST", self.vaultsecrets_path(ns), {"apiVersion": GROUP, "kind": "VaultSecret",
                                                               "metadata": {"name": name, "namespace": ns},
                                                               "spec": spec})

    def vaultsecrets(self, ns, deadline=60):
        """{name: object} of a namespace's VaultSecrets (None if the apiserver did not answer)."""
        st, j = self.retry("GET", self.vaultsecrets_path(ns), deadline=deadline)
        return {it["metadata"]["name"]: it for it in j.get("items", [])} if st == 200 and j else None

    def wait_ready(self, ns, names, timeout=60):
        """Waits until every named VaultSecret has condition Ready=True; returns the set that has."""
        end, ready = time.time() + timeout, set()
        while True:
            for name, it in (self.vaultsecrets(ns) or {}).items():
                conds = (it.get("status") or {}).get("conditions") or []
                if any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds):
                    ready.add(name)
            if ready >= set(names) or time.time() > end:
                return ready & set(names)
            time.sleep(0.3)

    def rotate_now(self, ns, name, nonce, deadline=60):
        return self.retry("PATCH", self.vaultsecrets_path(ns, name),
                          {"metadata": {"annotations": {ROTATE_NOW: nonce}}}, "application/merge-patch+json",
                          deadline=deadline)[0]
