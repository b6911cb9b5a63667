# How devices of the example appliance update: the one source of truth for
# ./sysupdate.d/*.transfer. Regenerate (or check) those files with
#   scripts/nix-eval-transfers [--check] examples/minimal/device.nix examples/minimal/sysupdate.d
# A NixOS device gets the same text from `services.sysupdate-publish-client`
# (nix/module.nix) given these attributes.
{
  url = "https://updates.example.com/stable";
  transfers = {
    uki = {
      priority = 50;
      sourcePattern = "appliance_@v.efi.xz";
      target = {
        type = "regular-file";
        path = "/EFI/Linux";
        pathRelativeTo = "boot";
        matchPattern = [ "appliance_@v+@l-@d.efi" "appliance_@v+@l.efi" "appliance_@v.efi" ];
        mode = "0444";
        triesLeft = 3;
        triesDone = 0;
        instancesMax = 2;
      };
    };
    store = {
      priority = 60;
      sourcePattern = "store_@v.img.xz";
      target = {
        type = "regular-file";
        path = "/var/lib/appliance";
        matchPattern = "store_@v.img";
        instancesMax = 2;
      };
    };
  };
}
