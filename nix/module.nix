# NixOS module for devices that update from a channel published by
# sysupdate-publish: systemd-sysupdate transfers (Type=url-file,
# Path=<url>/%a/, Verify=yes) plus the keyring that checks the signatures.
{ config, lib, ... }:

let
  cfg = config.services.sysupdate-publish-client;
  sysupdateLib = import ./lib.nix;

  setting = with lib.types; oneOf [ bool int str (nonEmptyListOf str) ];

  transferOptions = {
    options = {
      priority = lib.mkOption {
        type = lib.types.ints.between 0 99;
        example = 50;
        description = "Orders the transfers: the file is `<priority>-<name>` in {file}`/etc/sysupdate.d`.";
      };
      sourcePattern = lib.mkOption {
        type = lib.types.str;
        example = "appliance_@v.efi.xz";
        description = ''
          `MatchPattern=` of the payload as published, with its compression suffix,
          e.g. `appliance_@v.efi.xz`. It must match the names in `SHA256SUMS`.
        '';
      };
      target = lib.mkOption {
        type = lib.types.attrsOf setting;
        example = {
          type = "regular-file";
          path = "/EFI/Linux";
          pathRelativeTo = "boot";
          matchPattern = [ "appliance_@v+@l-@d.efi" "appliance_@v+@l.efi" "appliance_@v.efi" ];
          mode = "0444";
          triesLeft = 3;
          triesDone = 0;
          instancesMax = 2;
        };
        description = ''
          `[Target]` settings of {manpage}`sysupdate.d(5)`, in camelCase
          (`pathRelativeTo` becomes `PathRelativeTo=`); lists are joined with spaces.
        '';
      };
      transfer = lib.mkOption {
        type = lib.types.attrsOf setting;
        default = { };
        example = { minVersion = "17"; };
        description = ''
          Extra `[Transfer]` settings, in camelCase. `ProtectVersion=%A` and
          `Verify=yes` are always set.
        '';
      };
    };
  };
in
{
  options.services.sysupdate-publish-client = {
    enable = lib.mkEnableOption "updates with systemd-sysupdate from a channel published by sysupdate-publish";

    url = lib.mkOption {
      type = lib.types.str;
      example = "https://updates.example.com/stable";
      description = ''
        URL of the channel. Devices fetch `<url>/<arch>/SHA256SUMS`, its signature
        `SHA256SUMS.gpg` and the payloads, `<arch>` being systemd's architecture
        name (`%a`: `x86-64`, `arm64`, `riscv64`, ...).
      '';
    };

    keyring = lib.mkOption {
      type = lib.types.path;
      example = lib.literalExpression "./keys/release.pgp";
      description = ''
        Binary OpenPGP keyring holding the public key that signs the channel
        (`sysupdate-publish keygen --keyring` or `gpg --export`; not ASCII-armored).
        Installed as {file}`/etc/systemd/import-pubring.pgp` (systemd 258 and later)
        and {file}`/etc/systemd/import-pubring.gpg` (systemd 257 and earlier).
      '';
    };

    transfers = lib.mkOption {
      type = lib.types.attrsOf (lib.types.submodule transferOptions);
      default = { };
      example = lib.literalExpression ''
        {
          uki = {
            priority = 50;
            sourcePattern = "appliance_@v.efi.xz";
            target = { type = "regular-file"; path = "/EFI/Linux"; pathRelativeTo = "boot"; matchPattern = "appliance_@v.efi"; };
          };
        }
      '';
      description = ''
        The transfers of one update, by name. Every version published on the
        channel must carry one payload for each of them.
      '';
    };
  };

  config = lib.mkIf cfg.enable {
    systemd.sysupdate = {
      enable = true;
      transfers = sysupdateLib.toSystemdSysupdateTransfers { inherit (cfg) url transfers; };
    };

    environment.etc."systemd/import-pubring.pgp".source = cfg.keyring;
    environment.etc."systemd/import-pubring.gpg".source = cfg.keyring;
  };
}
