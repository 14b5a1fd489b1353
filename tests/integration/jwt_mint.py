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

    def token(self, claims, alg="RS256", kid=None, tamper=False, header=None, claims_text=None,
              header_text=None, encode=b64url, high_s=False):
        """A signed compact JWS. `claims_text`/`header_text` are sent as they are (to repeat a
        member name), `encode` spells the first two parts (to pad them), `high_s` gives an
        ES256 signature its other, high-S form (r, n - s), which verifies as ECDSA too."""
        head = header or {"alg": alg, "typ": "JWT", "kid": kid or ("ec1" if alg == "ES256" else "rsa1")}
        head_text = header_text if header_text is not None else json.dumps(head)
        body_text = claims_text if claims_text is not None else json.dumps(claims)
        signing_input = (encode(head_text.encode()) + "." + encode(body_text.encode())).encode()
        if alg == "RS256":
            signature = _run("openssl", "dgst", "-sha256", "-sign", self.rsa, data=signing_input)
        elif alg == "ES256":
            der = _run("openssl", "dgst", "-sha256", "-sign", self.ec, data=signing_input)
            signature = _der_to_raw(der, high_s)
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


# The order of P-256's group.
P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def _der_to_raw(der, high_s=False):
    # SEQUENCE { INTEGER r, INTEGER s } -> r || s, 32 bytes each, with S low (s <= n/2, what
    # chuted accepts) unless `high_s`.
    assert der[0] == 0x30
    index = 2 if der[1] < 0x80 else 3
    numbers = []
    for _ in range(2):
        assert der[index] == 0x02
        length = der[index + 1]
        numbers.append(int.from_bytes(der[index + 2:index + 2 + length], "big"))
        index += 2 + length
    r, s = numbers
    if (s > P256_N // 2) != high_s:
        s = P256_N - s
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def xoauth2(user, token):
    return base64.b64encode(f"user={user}\x01auth=Bearer {token}\x01\x01".encode()).decode()
