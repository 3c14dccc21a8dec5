"""PKI of the local control plane, made once with the openssl CLI: a CA, the apiserver's serving
certificate, an admin client certificate (group system:masters) and the service-account key pair.
Also writes the admin kubeconfig."""

from __future__ import annotations

import subprocess
from pathlib import Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def ensure(certs: Path) -> None:
    certs.mkdir(parents=True, exist_ok=True)
    if (certs / "admin.crt").exists():
        return
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650", "-subj",
             "/CN=imagegen-local-ca", "-keyout", "ca.key", "-out", "ca.crt", cwd=certs)
    (certs / "apiserver.ext").write_text(
        "subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,"
        "DNS:kubernetes.default,DNS:kubernetes.default.svc,"
        "DNS:kubernetes.default.svc.cluster.local\n"
        "extendedKeyUsage=serverAuth\n")
    (certs / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for name, subj, ext in (("apiserver", "/CN=kube-apiserver", "apiserver.ext"),
                            ("admin", "/O=system:masters/CN=imagegen-admin", "client.ext")):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", subj, "-keyout",
                 f"{name}.key", "-out", f"{name}.csr", cwd=certs)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                 "-CAcreateserial", "-days", "3650", "-extfile", ext, "-out", f"{name}.crt",
                 cwd=certs)
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=certs)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=certs)


def write_kubeconfig(path: Path, server: str, certs: Path) -> None:
    path.write_text(f"""apiVersion: v1
kind: Config
clusters:
- name: imagegen-local
  cluster:
    server: {server}
    certificate-authority: {certs / 'ca.crt'}
users:
- name: admin
  user:
    client-certificate: {certs / 'admin.crt'}
    client-key: {certs / 'admin.key'}
contexts:
- name: imagegen-local
  context: {{cluster: imagegen-local, user: admin, namespace: default}}
current-context: imagegen-local
""")
