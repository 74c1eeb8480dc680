"""The GitOps loop: sources → plan → apply (observe, decide, swap, verify, record) → history."""
