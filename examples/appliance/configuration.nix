# The appliance: a UKI on the ESP, a read-only /nix/store partition per version
# (A/B, labelled store_<version>), persistent /var, tmpfs root. Disk images are
# built with systemd-repart (image.repart); updates come from the channel.
{ config, lib, pkgs, modulesPath, ... }:

let
  inherit (pkgs.stdenv.hostPlatform) efiArch;
  partitions = config.image.repart.partitions;
in
{
  imports = [
    "${modulesPath}/image/repart.nix"
    "${modulesPath}/profiles/minimal.nix"
  ];

  system.image.id = "appliance"; # UKI appliance_<version>.efi, image appliance_<version>.raw
  system.stateVersion = "25.05";

  services.sysupdate-publish-client = import ./device.nix // {
    enable = true;
    # The channel's public keyring; create it (and the secret key, kept elsewhere) with
    #   sysupdate-publish keygen --uid "Appliance Releases <releases@example.com>" \
    #     --secret /run/secrets/appliance-release.asc --keyring examples/appliance/release.pgp
    keyring = ./release.pgp;
  };

  boot.loader.grub.enable = false;
  boot.initrd.systemd.enable = true;
  boot.kernelParams = [ "console=ttyS0" ];
  nix.enable = false;
  system.switch.enable = false;

  image.repart = {
    name = config.system.image.id;
    split = true; # also writes appliance_<version>.store.raw, the update payload
    partitions = {
      esp = {
        contents = {
          "/EFI/BOOT/BOOT${lib.toUpper efiArch}.EFI".source = "${pkgs.systemd}/lib/systemd/boot/efi/systemd-boot${efiArch}.efi";
          "/EFI/Linux/${config.system.boot.loader.ukiFile}".source = "${config.system.build.uki}/${config.system.boot.loader.ukiFile}";
        };
        repartConfig = { Type = "esp"; Label = "esp"; Format = "vfat"; SizeMinBytes = "256M"; };
      };
      store = {
        storePaths = [ config.system.build.toplevel ];
        stripNixStorePrefix = true;
        repartConfig = {
          Type = "linux-generic";
          Label = "store_${config.system.image.version}";
          Format = "squashfs";
          Minimize = "off";
          ReadOnly = "yes";
          SizeMinBytes = "1G";
          SizeMaxBytes = "1G";
          SplitName = "store";
        };
      };
      # The B slot: systemd-sysupdate writes the next version here.
      store-empty.repartConfig = {
        Type = "linux-generic";
        Label = "_empty";
        Minimize = "off";
        SizeMinBytes = "1G";
        SizeMaxBytes = "1G";
      };
      var.repartConfig = { Type = "var"; Format = "ext4"; Label = "var"; SizeMinBytes = "1G"; };
    };
  };

  fileSystems = {
    "/" = { fsType = "tmpfs"; options = [ "mode=0755" "size=20%" ]; };
    "/boot" = { device = "/dev/disk/by-partlabel/esp"; fsType = "vfat"; };
    "/nix/store" = { device = "/dev/disk/by-partlabel/${partitions.store.repartConfig.Label}"; fsType = "squashfs"; };
    "/var" = { device = "/dev/disk/by-partlabel/var"; fsType = "ext4"; };
  };
}
