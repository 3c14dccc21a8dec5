"""PKI of the local control plane, made once with the openssl CLI: a CA, the apiserver's serving
certificate, an admin client certificate (group system:masters), the service-account key pair,
the API server's client certificate for kubelets, and per real node a kubelet certificate
(serving and client: CN=system:node:<name>, O=system:nodes). Also writes kubeconfigs."""

from __future__ import annotations

import subprocess
from pathlib import Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _issue(certs: Path, name: str, subj: str, ext: str) -> None:
    (certs / f"{name}.ext").write_text(ext)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", subj, "-keyout",
             f"{name}.key", "-out", f"{name}.csr", cwd=certs)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "3650", "-extfile", f"{name}.ext", "-out",
             f"{name}.crt", cwd=certs)


def _apiserver_ext(host_ip: str | None) -> str:
    ips = ["127.0.0.1", "10.96.0.1", *([host_ip] if host_ip else [])]
    return ("subjectAltName=" + ",".join(f"IP:{ip}" for ip in ips) +
            ",DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,"
            "DNS:kubernetes.default.svc.cluster.local\nextendedKeyUsage=serverAuth\n")


def ensure(certs: Path, host_ip: str | None = None) -> None:
    """The CA and the control plane's certificates; the apiserver's is re-issued when the host's
    address (which pods on the real nodes use) is not among its names."""
    certs.mkdir(parents=True, exist_ok=True)
    if not (certs / "admin.crt").exists():
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650", "-subj",
                 "/CN=imagegen-local-ca", "-keyout", "ca.key", "-out", "ca.crt", cwd=certs)
        _issue(certs, "admin", "/O=system:masters/CN=imagegen-admin",
               "extendedKeyUsage=clientAuth\n")
        _openssl("genrsa", "-out", "sa.key", "2048", cwd=certs)
        _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=certs)
    ext = certs / "apiserver.ext"
    if not (certs / "apiserver.crt").exists() or ext.read_text() != _apiserver_ext(host_ip):
        _issue(certs, "apiserver", "/CN=kube-apiserver", _apiserver_ext(host_ip))
    if not (certs / "apiserver-kubelet-client.crt").exists():
        # What the API server shows kubelets for logs/exec/port-forward (kubelet webhook authz).
        _issue(certs, "apiserver-kubelet-client",
               "/O=system:masters/CN=kube-apiserver-kubelet-client",
               "extendedKeyUsage=clientAuth\n")


def ensure_node(certs: Path, node: str, host_ip: str) -> None:
    """A real node's kubelet certificate: serving (its address) and client (Node authorizer)."""
    name = f"node-{node}"
    ext = (f"subjectAltName=IP:{host_ip},DNS:{node}\n"
           "extendedKeyUsage=serverAuth,clientAuth\n")
    if (certs / f"{name}.crt").exists() and (certs / f"{name}.ext").read_text() == ext:
        return
    _issue(certs, name, f"/O=system:nodes/CN=system:node:{node}", ext)


def write_kubeconfig(path: Path, server: str, certs: Path, user: str = "admin") -> None:
    path.write_text(f"""apiVersion: v1
kind: Config
clusters:
- name: imagegen-local
  cluster:
    server: {server}
    certificate-authority: {certs / 'ca.crt'}
users:
- name: {user}
  user:
    client-certificate: {certs / (user + '.crt')}
    client-key: {certs / (user + '.key')}
contexts:
- name: imagegen-local
  context: {{cluster: imagegen-local, user: {user}, namespace: default}}
current-context: imagegen-local
""")
