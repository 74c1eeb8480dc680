#!/bin/sh
# Healthy = the control socket answers and Asterisk finished booting.
out=$(timeout 4 asterisk -rx "core waitfullybooted" 2>&1) || exit 1
case "$out" in
    *"fully booted"*) exit 0 ;;
    *) echo "$out"; exit 1 ;;
esac
