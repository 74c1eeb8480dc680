#!/bin/sh
# Called by entrypoint.sh before Asterisk starts: writes the AMI configuration (manager.conf).
# Placeholder until the AMI control channel lands: AMI stays disabled.
exit 0
