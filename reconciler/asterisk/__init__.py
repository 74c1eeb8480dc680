"""Asterisk: the control channel, the CLI grammar, the transaction records kept in the PBX's volume."""
