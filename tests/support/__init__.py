"""Shared test helpers: free ports, bounded waits, real child processes, a real Envoy."""
