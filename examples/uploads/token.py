#!/usr/bin/env python3
"""Prints a JWT for USER, as the identity provider of this example would issue it: HS256 with the
shared secret in the file SECRET, issuer https://uploads.example, audience ferry, an hour's
life, scopes publish and read. Standard library only.

Usage: token.py SECRET USER"""
import base64
import hashlib
import hmac
import json
import sys
import time


def part(value):
    return base64.urlsafe_b64encode(json.dumps(value, separators=(",", ":")).encode()).rstrip(b"=").decode()


secret = open(sys.argv[1], "rb").read().strip()
claims = {"sub": sys.argv[2], "iss": "https://uploads.example", "aud": "ferry", "exp": int(time.time()) + 3600,
          "scope": "publish read"}
signing = part({"alg": "HS256", "typ": "JWT"}) + "." + part(claims)
signature = base64.urlsafe_b64encode(hmac.new(secret, signing.encode(), hashlib.sha256).digest()).rstrip(b"=").decode()
print(signing + "." + signature)
