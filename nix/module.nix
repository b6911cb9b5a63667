# NixOS module for devices that update from a channel published by
# sysupdate-publish: systemd-sysupdate transfers (Type=url-file,
# Path=<url>/%a/, Verify=yes) plus the keyring that checks the signatures,
# and optional rollout rings (systemd 261+): a stable fraction of the fleet
# follows another channel (README "Staged rollouts").
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
  ringOptions = {
    options = {
      channel = lib.mkOption {
        type = lib.types.strMatching "[A-Za-z0-9_][A-Za-z0-9_.-]*";
        example = "canary";
        description = ''
          Name of the ring: the publisher's channel name. It names the transfer
          set {file}`/etc/sysupdate-rings/<channel>.d` and the units
          `sysupdate-publish-ring-<channel>.service` / `.timer`.
        '';
      };
      url = lib.mkOption {
        type = lib.types.nullOr lib.types.str;
        default = null;
        example = "https://updates.example.com/canary";
        description = ''
          URL of the ring's channel, as `url` for the default channel. Default: the
          channel beside the default one, i.e. `url` with its last path component
          replaced by `channel` (`https://updates.example.com/stable` gives
          `https://updates.example.com/canary` for the ring `canary`).
        '';
      };
      fraction = lib.mkOption {
        type = lib.types.strMatching "[0-9]{1,3}(\\.[0-9]{1,2})?%";
        example = "10%";
        description = ''
          Share of the fleet in this ring, a percentage with at most two decimals
          (what `ConditionFraction=` takes). Rings take consecutive bands of one
          rollout, in list order, so they never overlap; their sum is at most 100%.
        '';
      };
    };
  };

  hasRings = cfg.rings != [ ];
  device = { inherit (cfg) url transfers rings rolloutTag; };
  bands = sysupdateLib.ringBands device;
  systemdVersion = lib.getVersion config.systemd.package;
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

    rings = lib.mkOption {
      type = lib.types.listOf (lib.types.submodule ringOptions);
      default = [ ];
      example = lib.literalExpression ''
        [
          { channel = "canary"; fraction = "5%"; }   # https://updates.example.com/canary
          { channel = "beta"; url = "https://beta.example.com/appliance"; fraction = "20%"; }
        ]
      '';
      description = ''
        Rollout rings: each device follows exactly one channel, chosen from its
        machine ID by `ConditionFraction=` (systemd 261 or later; evaluation fails
        on an older `systemd.package`, which would ignore the condition and follow
        every ring). Ring k takes the machines in the band
        (f1+…+f(k-1), f1+…+fk] of the rollout `rolloutTag`; the others follow `url`.
        Each ring gets the same `transfers`, pointed at its channel, in
        {file}`/etc/sysupdate-rings/<channel>.d`, and its own service and timer
        running `systemd-sysupdate --definitions=` on them; systemd's own
        `systemd-sysupdate.service` (the default channel) gets the complement.
        Empty: no ring, and nothing differs from a configuration without this option.
      '';
    };

    rolloutTag = lib.mkOption {
      type = lib.types.strMatching "[A-Za-z0-9_.:-]+";
      default = "sysupdate-publish";
      description = ''
        The tag of `ConditionFraction=` that all rings share, so their bands nest.
        Changing it deals the fleet into the rings anew.
      '';
    };
  };

  config = lib.mkIf cfg.enable (lib.mkMerge [
    {
      systemd.sysupdate = {
        enable = true;
        transfers = sysupdateLib.toSystemdSysupdateTransfers { inherit (cfg) url transfers; };
      };

      environment.etc."systemd/import-pubring.pgp".source = cfg.keyring;
      environment.etc."systemd/import-pubring.gpg".source = cfg.keyring;
    }

    (lib.mkIf hasRings {
      assertions = [{
        assertion = lib.versionAtLeast systemdVersion "261";
        message = ''
          services.sysupdate-publish-client.rings needs systemd 261 or later (ConditionFraction=);
          systemd ${systemdVersion} ignores that condition, so the device would follow every ring.
        '';
      }];

      # One transfer set per ring, the same text nix/lib.nix gives the tests.
      environment.etc = lib.mkMerge (map (b:
        lib.mapAttrs' (file: text: lib.nameValuePair "sysupdate-rings/${b.channel}.d/${file}" { inherit text; })
          (sysupdateLib.transferFiles { inherit (b) url; inherit (cfg) transfers; }))
        bands.bands);

      # The rings' services and timers, verbatim from nix/lib.nix.
      systemd.units = lib.mapAttrs (name: text: {
        inherit text;
        wantedBy = lib.optional (lib.hasSuffix ".timer" name) "timers.target";
      }) (sysupdateLib.ringUnits { sysupdate = "${config.systemd.package}/lib/systemd/systemd-sysupdate"; } device);

      # systemd's own update service (the default channel) keeps the machines in no ring.
      systemd.services.systemd-sysupdate.unitConfig.ConditionFraction = bands.defaultConditions;
    })
  ]);
}
