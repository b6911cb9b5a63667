# The end-to-end suite's device: what a device of examples/minimal/device.nix
# looks like inside the test chroot. tests/e2e.rs turns it into *.transfer
# files with nix/lib.nix, through
#   SYSUPDATE_E2E_URL=https://localhost:PORT/CHANNEL scripts/nix-eval-transfers tests/e2e/device.nix DIR
# and uses those same files twice: installed in the device (systemd-sysupdate
# reads them) and as the publisher's `[transfers] dir` (sysupdate-publish reads
# them). The URL changes with every run (free port, one channel per scenario),
# hence the environment variable.
#
# Differences from the example, all forced by the test device: targets are
# plain directories inside the chroot (/var/lib/e2e/{uki,store}, created by
# tests/e2e/device.sh), with one MatchPattern each, and the default
# InstancesMax (3).
let
  url = builtins.getEnv "SYSUPDATE_E2E_URL";
in
assert url != "" || throw "set SYSUPDATE_E2E_URL to the channel URL (https://localhost:PORT/NAME)";
{
  inherit url;
  transfers = {
    uki = {
      priority = 50;
      sourcePattern = "appliance_@v.efi.xz";
      target = {
        type = "regular-file";
        path = "/var/lib/e2e/uki";
        matchPattern = "appliance_@v.efi";
      };
    };
    store = {
      priority = 60;
      sourcePattern = "store_@v.img.xz";
      target = {
        type = "regular-file";
        path = "/var/lib/e2e/store";
        matchPattern = "store_@v.img";
      };
    };
  };
}
