"""X.509 credentials for TLS migration benchmarks, in QEMU's directory layout (ca-cert.pem,
server-cert.pem, server-key.pem, client-cert.pem, client-key.pem), made with the openssl
command: one CA, a server certificate naming localhost and 127.0.0.1, a client certificate.
ferry (--tls-creds DIR) and QEMU (-object tls-creds-x509,dir=DIR) read the same directory."""
import os
import subprocess


def _run(*argv):
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def make_x509_dir(path):
    """Writes the credentials into `path` (created) and returns it."""
    os.makedirs(path, exist_ok=True)
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _run("openssl", "req", "-x509", *ec, "-days", "2", "-subj", "/CN=ferry bench CA",
         "-keyout", f"{path}/ca-key.pem", "-out", f"{path}/ca-cert.pem")
    ext = f"{path}/ext.cnf"
    with open(ext, "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for role in ("server", "client"):
        _run("openssl", "req", "-new", *ec, "-subj", f"/CN=ferry bench {role}",
             "-keyout", f"{path}/{role}-key.pem", "-out", f"{path}/{role}.csr")
        _run("openssl", "x509", "-req", "-in", f"{path}/{role}.csr", "-CA", f"{path}/ca-cert.pem",
             "-CAkey", f"{path}/ca-key.pem", "-CAcreateserial", "-days", "2", "-extfile", ext,
             "-out", f"{path}/{role}-cert.pem")
    return path
