# The end-to-end suite's device with rollout rings: tests/e2e/device.nix (the default
# channel at SYSUPDATE_E2E_URL) plus the rings in SYSUPDATE_E2E_RINGS, a JSON list of
# { "channel": NAME, "url": URL (optional), "fraction": "10%" } (what the NixOS module's `rings`
# option takes). tests/e2e_rings.rs turns it into a device's /etc with nix/lib.nix:
#   SYSUPDATE_E2E_URL=… SYSUPDATE_E2E_RINGS='[…]' scripts/nix-eval-transfers --etc tests/e2e/ring-device.nix DIR
let
  rings = builtins.getEnv "SYSUPDATE_E2E_RINGS";
in
assert rings != "" || throw "set SYSUPDATE_E2E_RINGS to a JSON list of rings";
(import ./device.nix) // { rings = builtins.fromJSON rings; }
