"""Test harness: real Asterisk containers and SIPp phones on 127.0.0.1, for integration/gitops tests.

- `ports`: `reserve_port()`, `reserve_rtp_range()` (flock-reserved across processes, bind-tested),
  `socket_pids(port)` to prove who owns a port.
- `containers`: `PbxContainer` (empty managed dir: the reconciler writes into it),
  `ProviderContainer` (the product's sandbox carrier as the SIP provider: accepts REGISTER from
  `pbxtrunk`, answers any number, `received_numbers()`), `pbx_stack(workdir)` (both plus a desired
  dir and secrets; `PbxStack.apply()` runs the real apply), `write_desired_dir()`, `make_secrets()`, `poll()`.
- `sipp`: `register()`, `unregister()`, `call()`, `invite_without_auth()` → `SippResult`;
  `answering_phone()` (a registered UAS that records which calls it answered); `kill_all()`.

Fixtures built on it live in `tests/conftest.py` (`pbx_stack`, `artifacts_dir`, `docker_image`)
and `tests/integration/conftest.py` (`live_pbx`, `provider_inbox`).
"""
