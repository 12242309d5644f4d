#!/usr/bin/env python3
"""Independent check of a Wattest certificate with PyJWT, using only the oracle's JWKS.

Usage: verify_certificate.py ORACLE_URL CERTIFICATE_ID AUDITOR_TOKEN

1. GET /.well-known/jwks.json and the bare certificate JWS (Accept: application/jose);
   PyJWT verifies it (PS256 only, exp/nbf/iat required) with the key whose kid matches.
2. The same payload with one figure changed must fail PyJWT's signature check.
3. GET the Verifiable Credential form (Accept: application/vc+jwt); PyJWT verifies it and, as a
   conforming verifier of a `JsonSchema` credentialSchema would (VC Data Model 2.0 §4.11, VC JSON
   Schema), `jsonschema` validates the whole credential against the schema fetched from
   credentialSchema.id, resolving its references ($ref to the subject schema) over HTTP.
   The credentialStatus URL is fetched: the certificate's status resource, state `valid`.
Prints a JSON summary; exits 1 on any failure.
"""
import base64
import json
import sys
import urllib.request

import jsonschema
import jwt
import referencing


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
    declared = credential["credentialSchema"]
    assert declared["type"] == "JsonSchema", declared
    schema = json.loads(fetch(declared["id"]))
    # The schema names itself by the URL it is served at, so relative references resolve there.
    assert schema["$id"] == declared["id"], (schema["$id"], declared["id"])

    def retrieve(uri):
        return referencing.Resource.from_contents(json.loads(fetch(uri)))

    validator = jsonschema.Draft202012Validator(
        schema,
        format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
        registry=referencing.Registry(retrieve=retrieve),
    )
    validator.validate(credential)
    # The schema is not vacuous: a subject member it does not define, or a missing
    # credentialStatus, is refused.
    for broken in (
        dict(credential, credentialSubject=dict(credential["credentialSubject"], extra=1)),
        {k: v for k, v in credential.items() if k != "credentialStatus"},
    ):
        if validator.is_valid(broken):
            raise SystemExit("the declared schema accepts an invalid credential")
    assert credential["credentialSubject"]["certificate_id"] == cert_id
    status_ref = credential["credentialStatus"]
    assert status_ref["type"] == "WattestCertificateStatus", status_ref
    assert status_ref["id"] == f"{base}/v1/certificates/{cert_id}/status", status_ref
    status = json.loads(fetch(status_ref["id"], token))
    assert status["state"] == "valid", status
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
