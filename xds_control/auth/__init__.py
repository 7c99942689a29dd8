"""Incoming authentication and authorization (docs/dev/auth.md).

policy.py    verified claims -> a grant of exposed names (pure)
identity.py  the identity Envoy verified, as the aggregator reads it (pure)
jwks.py      JWKS files: read, checked, watched (the control plane pushes them to Envoy)
devtoken.py  `xds-control dev-token`: a development issuer's keys and tokens
"""
