"""Simulated producers and a throwaway redis-server for the demo, the bench and tests."""
