"""VirtualMachineWebConsoleRequest: a ticket encrypted to the caller's key opens the VM's
console once, with no other credential, as the user who asked; a used, expired or misdirected
ticket is a 401; who asked cannot be forged; bad keys are 422s naming the field."""

from __future__ import annotations

import base64
import json
import ssl
import urllib.error
import urllib.request
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from tests.conftest import Platform, wait_until
from tests.e2e.test_vms import tiny_image, vm_yaml, wait_console  # noqa: F401 (a fixture)

GROUP = "vmoperator.vmware.com"
REQ6 = f"virtualmachinewebconsolerequests.v1alpha6.{GROUP}"
REQUESTED_BY = "vmoperator.atoll.dev/requested-by"


def pem(key: Any) -> str:
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def request(platform: Platform, ns: str, name: str, vm: str, public_pem: str,
            annotations: dict[str, str] | None = None, check: bool = True) -> Any:
    return platform.kubectl("apply", "-f", "-", check=check, input=json.dumps({
        "apiVersion": f"{GROUP}/v1alpha6", "kind": "VirtualMachineWebConsoleRequest",
        "metadata": {"name": name, "namespace": ns, "annotations": annotations or {}},
        "spec": {"name": vm, "publicKey": public_pem}}))


def issued(platform: Platform, ns: str, name: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        out = platform.kubectl("get", REQ6, name, "-n", ns, "-o", "json", check=False)
        obj = json.loads(out.stdout) if out.returncode == 0 else {}
        return obj if (obj.get("status") or {}).get("response") else None
    return wait_until(f"the ticket of {name}", check, timeout=30, interval=0.2)


def ticket_of(obj: dict[str, Any], key: rsa.RSAPrivateKey) -> str:
    return key.decrypt(base64.b64decode(obj["status"]["response"]), padding.OAEP(
        mgf=padding.MGF1(algorithm=hashes.SHA512()), algorithm=hashes.SHA512(),
        label=None)).decode()


def open_console(platform: Platform, address: str, ns: str, vm: str, ticket: str
                 ) -> tuple[int, str]:
    """A GET of the console's log with the ticket alone (no client certificate)."""
    ctx = ssl.create_default_context(cafile=str(platform.data_dir / "pki" / "ca.crt"))
    url = (f"https://{address}/apis/{GROUP}/v1alpha3/namespaces/{ns}/virtualmachines/{vm}"
           f"/console?ticket={ticket}")
    try:
        with urllib.request.urlopen(url, context=ctx, timeout=30) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def test_a_ticket_opens_the_console_once_as_its_user(platform: Platform, namespace: str,
                                                     tiny_image: str) -> None:  # noqa: F811
    platform.kubectl("apply", "-f", "-", input=vm_yaml(namespace, "con", tiny_image))
    wait_console(platform, namespace, "con", "marker-con", timeout=180)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    # who asked is the server's to say: a forged annotation is replaced
    request(platform, namespace, "first", "con", pem(key),
            annotations={REQUESTED_BY: json.dumps({"name": "system:admin",
                                                   "groups": ["system:masters"]})})
    obj = issued(platform, namespace, "first")
    who = json.loads(obj["metadata"]["annotations"][REQUESTED_BY])
    admin = json.loads(platform.kubectl("auth", "whoami", "-o", "json").stdout)["status"][
        "userInfo"]
    assert who["name"] == admin["username"] and who["name"] != "system:admin"
    platform.kubectl("annotate", REQ6, "first", "-n", namespace, "--overwrite",
                     f'{REQUESTED_BY}={{"name":"someone-else"}}')
    after = json.loads(platform.kubectl("get", REQ6, "first", "-n", namespace, "-o",
                                        "json").stdout)
    assert json.loads(after["metadata"]["annotations"][REQUESTED_BY]) == who
    assert obj["status"]["proxyAddr"] == f"127.0.0.1:{platform.port}"
    # the digest is the platform's: a write of the object itself (what editors may do)
    # leaves status alone
    platform.kubectl("patch", REQ6, "first", "-n", namespace, "--type=merge",
                     "-p", '{"status": {"ticketDigest": "0000"}}')
    assert json.loads(platform.kubectl("get", REQ6, "first", "-n", namespace, "-o", "json")
                      .stdout)["status"]["ticketDigest"] == obj["status"]["ticketDigest"]
    ticket = ticket_of(obj, key)

    # misdirected (another VM's console), the ticket does nothing and stays usable
    assert open_console(platform, obj["status"]["proxyAddr"], namespace, "other", ticket)[0] \
        == 401
    status, text = open_console(platform, obj["status"]["proxyAddr"], namespace, "con", ticket)
    assert status == 200 and "marker-con" in text, (status, text[-300:])
    # used up: the request is gone, and the ticket a 401
    assert open_console(platform, obj["status"]["proxyAddr"], namespace, "con", ticket)[0] \
        == 401
    wait_until("the used request gone", lambda: platform.kubectl(
        "get", REQ6, "first", "-n", namespace, check=False).returncode != 0, timeout=30)
    assert open_console(platform, obj["status"]["proxyAddr"], namespace, "con", "x" * 43)[0] \
        == 401

    # expired: a 401
    request(platform, namespace, "late", "con", pem(key))
    late = issued(platform, namespace, "late")
    platform.kubectl("patch", REQ6, "late", "-n", namespace, "--subresource=status",
                     "--type=merge", "-p", '{"status": {"expiryTime": "2020-01-01T00:00:00Z"}}')
    wait_until("the expiry seen", lambda: json.loads(platform.kubectl(
        "get", REQ6, "late", "-n", namespace, "-o", "json", check=False).stdout or "{}")
        .get("status", {}).get("expiryTime", "").startswith("2020") or not platform.kubectl(
        "get", REQ6, "late", "-n", namespace, check=False).stdout, timeout=30)
    assert open_console(platform, late["status"]["proxyAddr"], namespace, "con",
                        ticket_of(late, key))[0] == 401


def test_bad_keys_are_refused_with_the_field(platform: Platform, namespace: str) -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    curve = ec.generate_private_key(ec.SECP256R1())
    for public, why in (("not a key", "PEM-encoded RSA public key"),
                        (pem(small), "2048 bits or more"), (pem(curve), "must be an RSA key")):
        out = request(platform, namespace, "bad", "con", public, check=False)
        assert out.returncode != 0 and "spec.publicKey" in out.stderr and why in out.stderr, \
            out.stderr
    out = request(platform, namespace, "bad", "Not_A_Name", pem(
        rsa.generate_private_key(public_exponent=65537, key_size=2048)), check=False)
    assert out.returncode != 0 and "spec.name" in out.stderr, out.stderr
