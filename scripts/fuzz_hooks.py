"""Schemathesis hooks for scripts/fuzz-api.sh: a compact JWS (`application/jose`) is text."""
import schemathesis

schemathesis.serializer.alias("application/jose", "text/plain")
