#!/usr/bin/env python3
"""Independent check of a Wattest certificate with PyJWT, using only the oracle's JWKS.

Usage: verify_certificate.py ORACLE_URL CERTIFICATE_ID AUDITOR_TOKEN

1. GET /.well-known/jwks.json and the bare certificate JWS (Accept: application/jose);
   PyJWT verifies it (PS256 only, exp/nbf/iat required) with the key whose kid matches.
2. The same payload with one figure changed must fail PyJWT's signature check.
3. GET the Verifiable Credential form (Accept: application/vc+jwt); PyJWT verifies it and
   `jsonschema` validates its credentialSubject against /v1/schemas/energy-certificate-subject.json.
Prints a JSON summary; exits 1 on any failure.
"""
import base64
import json
import sys
import urllib.request

import jsonschema
import jwt


def fetch(url, token=None, accept=None):
    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if accept:
        req.add_header("Accept", accept)
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.read().decode()


def key_for(jwks, token):
    kid = jwt.get_unverified_header(token)["kid"]
    for k in jwt.PyJWKSet.from_dict(jwks).keys:
        if k.key_id == kid:
            return k.key
    raise SystemExit(f"no JWKS key with kid {kid}")


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def main():
    base, cert_id, token = sys.argv[1].rstrip("/"), sys.argv[2], sys.argv[3]
    jwks = json.loads(fetch(f"{base}/.well-known/jwks.json"))
    cert = fetch(f"{base}/v1/certificates/{cert_id}", token, "application/jose").strip()
    header = jwt.get_unverified_header(cert)
    assert header["typ"] == "wattest-cert+jwt", header
    claims = jwt.decode(
        cert,
        key_for(jwks, cert),
        algorithms=["PS256"],
        options={"require": ["exp", "nbf", "iat"]},
    )
    assert claims["jti"] == cert_id, claims["jti"]

    h, p, s = cert.split(".")
    forged = json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))
    forged["wattest.energy"]["consumed_wh"] = "0.000001"
    tampered = f"{h}.{b64(json.dumps(forged).encode())}.{s}"
    try:
        jwt.decode(tampered, key_for(jwks, cert), algorithms=["PS256"])
        raise SystemExit("PyJWT accepted a tampered certificate")
    except jwt.InvalidSignatureError:
        pass

    vc = fetch(f"{base}/v1/certificates/{cert_id}", token, "application/vc+jwt").strip()
    assert jwt.get_unverified_header(vc)["typ"] == "vc+jwt"
    credential = jwt.decode(vc, key_for(jwks, vc), algorithms=["PS256"])
    schema = json.loads(fetch(f"{base}/v1/schemas/energy-certificate-subject.json"))
    validator = jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    validator.validate(credential["credentialSubject"])
    assert credential["credentialSubject"]["certificate_id"] == cert_id
    assert "VerifiableCredential" in credential["type"]

    print(json.dumps({
        "ok": True,
        "pyjwt": jwt.__version__,
        "jsonschema": getattr(jsonschema, "__version__", "?"),
        "kid": header["kid"],
        "status": claims["ear.status"],
        "consumed_wh": claims["wattest.energy"]["consumed_wh"],
        "vc_types": credential["type"],
    }))


if __name__ == "__main__":
    main()
