"""xds-control: an MCP gateway on Envoy whose routing follows MCP-level health."""

__version__ = "0.1.0"
