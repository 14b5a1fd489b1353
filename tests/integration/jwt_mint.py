"""Test keys, JWKS documents and signed JWTs, made with the openssl CLI and the stdlib."""

import base64
import hashlib
import hmac
import json
import os
import subprocess


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _run(*args, data=None):
    return subprocess.run(args, input=data, capture_output=True, check=True).stdout


class Keys:
    """An RSA-2048 and an EC P-256 key pair in `directory`, and their JWKS."""

    def __init__(self, directory):
        self.rsa = os.path.join(directory, "rsa.pem")
        self.ec = os.path.join(directory, "ec.pem")
        _run("openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
             "-out", self.rsa)
        _run("openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-out", self.ec)
        self.rsa_public_pem = _run("openssl", "pkey", "-in", self.rsa, "-pubout")
        modulus_hex = _run("openssl", "rsa", "-in", self.rsa, "-noout", "-modulus").decode()
        modulus = bytes.fromhex(modulus_hex.strip().split("=", 1)[1])
        ec_der = _run("openssl", "pkey", "-in", self.ec, "-pubout", "-outform", "DER")
        point = ec_der[-65:]  # 04 || X || Y
        self.jwks = {"keys": [
            {"kty": "RSA", "kid": "rsa1", "use": "sig", "n": b64url(modulus), "e": "AQAB"},
            {"kty": "EC", "kid": "ec1", "crv": "P-256", "x": b64url(point[1:33]),
             "y": b64url(point[33:])},
        ]}
        self.jwks_path = os.path.join(directory, "jwks.json")
        with open(self.jwks_path, "w") as f:
            json.dump(self.jwks, f)

    def token(self, claims, alg="RS256", kid=None, tamper=False, header=None):
        head = header or {"alg": alg, "typ": "JWT", "kid": kid or ("ec1" if alg == "ES256" else "rsa1")}
        signing_input = (b64url(json.dumps(head).encode()) + "." +
                         b64url(json.dumps(claims).encode())).encode()
        if alg == "RS256":
            signature = _run("openssl", "dgst", "-sha256", "-sign", self.rsa, data=signing_input)
        elif alg == "ES256":
            der = _run("openssl", "dgst", "-sha256", "-sign", self.ec, data=signing_input)
            signature = _der_to_raw(der)
        elif alg == "HS256":  # the classic confusion: HMAC keyed with the RSA public key
            signature = hmac.new(self.rsa_public_pem, signing_input, hashlib.sha256).digest()
        else:
            signature = b""
        token = signing_input.decode() + "." + b64url(signature)
        if tamper:
            head_part, claims_part, sig = token.split(".")
            forged = dict(claims, roles=["SMTP.SendAsApp", "Admin"])
            token = ".".join([head_part, b64url(json.dumps(forged).encode()), sig])
        return token


def _der_to_raw(der):
    # SEQUENCE { INTEGER r, INTEGER s } -> r || s, 32 bytes each.
    assert der[0] == 0x30
    index = 2 if der[1] < 0x80 else 3
    out = b""
    for _ in range(2):
        assert der[index] == 0x02
        length = der[index + 1]
        value = der[index + 2:index + 2 + length].lstrip(b"\0")
        out += value.rjust(32, b"\0")
        index += 2 + length
    return out


def xoauth2(user, token):
    return base64.b64encode(f"user={user}\x01auth=Bearer {token}\x01\x01".encode()).decode()
