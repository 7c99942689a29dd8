"""Where the aggregator sends backend calls: Envoy's egress listener as the aggregator dials it.

Regression: the aggregator dialled `egress.address` (Envoy's bind address, 0.0.0.0 in compose) and not
`aggregator.egress_address` (`envoy`, the service name), so every tools/call in the compose stack was refused.
"""

from __future__ import annotations

import pytest

from tests.support.stack import stack_config
from xds_control.aggregator.upstream import egress_upstream_url
from xds_control.config import BackendConfig


@pytest.mark.parametrize(
    ("egress", "aggregator", "dialled"),
    [
        ({"address": "0.0.0.0"}, {"egress_address": "envoy"}, "envoy"),  # containers: Envoy's service name
        ({"address": "0.0.0.0"}, {}, "127.0.0.1"),  # one machine: a wildcard bind is dialled on loopback
        ({"address": "::"}, {}, "[::1]"),
        ({"address": "127.0.0.1"}, {"egress_address": "fd00::5"}, "[fd00::5]"),
    ],
)
def test_backend_calls_go_to_the_egress_listener_where_the_aggregator_dials_it(egress, aggregator, dialled):
    config = stack_config(
        [{"name": "weather", "url": "http://127.0.0.1:9001/mcp"}], egress=egress, aggregator=aggregator
    )
    backend = config.backend("weather")
    assert isinstance(backend, BackendConfig)
    expected = f"http://{dialled}:{config.egress.port}/backends/weather/mcp"
    assert egress_upstream_url(config)(backend) == expected
    assert config.egress_url("weather") == expected
