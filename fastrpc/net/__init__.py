"""Reaching a peer: addresses, endpoints, dialing (TCP, Unix, TLS), the
shared-secret handshake, client settings and event loop selection."""
