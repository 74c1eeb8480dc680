"""Observation: status, dashboard, metrics, doctor, SIP checks, the HTTP server."""
