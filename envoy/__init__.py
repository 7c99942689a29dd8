"""Envoy bootstrap template, installed as `xds_control.envoy` (see pyproject's package-dir)."""
