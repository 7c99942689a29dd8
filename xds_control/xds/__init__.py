"""The xDS layer: pure translation of the view into Envoy resources, a versioned snapshot cache, the ADS server."""
