# How the appliance updates: read by configuration.nix (the device module) and
# turned into ./sysupdate.d for the publisher by
#   scripts/nix-eval-transfers examples/appliance/device.nix examples/appliance/sysupdate.d
{
  url = "https://updates.example.com/appliance/stable";
  transfers = {
    # The UKI, with boot counting: systemd-boot falls back when it fails to boot.
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
    # The /nix/store image, written into the other of the two store partitions.
    store = {
      priority = 60;
      sourcePattern = "store_@v.img.xz";
      target = {
        type = "partition";
        path = "/dev/vda"; # "auto" cannot find the disk under a tmpfs root
        matchPartitionType = "linux-generic";
        matchPattern = "store_@v";
        readOnly = "yes";
      };
    };
  };
}
