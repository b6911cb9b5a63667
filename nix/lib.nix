# Device-side transfer definitions for sysupdate-publish channels, with plain
# builtins only (no nixpkgs), so that nix 2.8 can evaluate it in tests.
#
# Input (see examples/minimal/device.nix):
#   {
#     url = "https://updates.example.com/stable";  # the channel; devices fetch <url>/%a/
#     transfers.<name> = {
#       priority = 50;                             # file name prefix: 50-<name>
#       sourcePattern = "appliance_@v.efi.xz";     # name of the payload as published
#       target = { type = "regular-file"; path = "/EFI/Linux"; matchPattern = [ ... ]; ... };
#       transfer = { };                            # optional extra [Transfer] settings
#     };
#   }
# `target` and `transfer` take any sysupdate.d(5) setting, written in camelCase
# (`pathRelativeTo` -> PathRelativeTo=); a list becomes a space-separated value.
let
  chars = s: builtins.genList (i: builtins.substring i 1 s) (builtins.stringLength s);
  capitalize = s:
    builtins.replaceStrings (chars "abcdefghijklmnopqrstuvwxyz") (chars "ABCDEFGHIJKLMNOPQRSTUVWXYZ")
      (builtins.substring 0 1 s)
    + builtins.substring 1 (-1) s;

  section = attrs: builtins.listToAttrs (map (name: { name = capitalize name; value = attrs.${name}; }) (builtins.attrNames attrs));

  # Same rendering as nixpkgs' `pkgs.formats.ini { listToValue = toString; }`
  # (sections and keys sorted, `Key=value`, lists joined by spaces), so the
  # NixOS module installs byte-for-byte the text below.
  value = v:
    if builtins.isList v then toString v
    else if builtins.isBool v then (if v then "true" else "false")
    else toString v;
  toINI = sections: builtins.concatStringsSep "\n" (map (s:
    "[${s}]\n" + builtins.concatStringsSep "" (map (k: "${k}=${value sections.${s}.${k}}\n")
      (builtins.attrNames sections.${s}))) (builtins.attrNames sections));
in
rec {
  # { url; transfers; } -> { "50-uki" = { Transfer = { ... }; Source = { ... }; Target = { ... }; }; ... }
  # The shape of nixpkgs' `systemd.sysupdate.transfers` (which names the files <name>.conf).
  toSystemdSysupdateTransfers = { url, transfers }:
    builtins.listToAttrs (map (name:
      let
        t = transfers.${name};
        channel = if builtins.match ".*/" url != null then builtins.substring 0 (builtins.stringLength url - 1) url else url;
      in {
        name = "${toString t.priority}-${name}";
        value = {
          Transfer = { ProtectVersion = "%A"; Verify = "yes"; } // section (t.transfer or { });
          Source = { Type = "url-file"; Path = "${channel}/%a/"; MatchPattern = t.sourcePattern; };
          Target = section t.target;
        };
      }) (builtins.attrNames transfers));

  # { url; transfers; } -> { "50-uki.transfer" = "<file text>"; ... }
  transferFiles = device:
    let transfers = toSystemdSysupdateTransfers device; in
    builtins.listToAttrs (map (name: { name = "${name}.transfer"; value = toINI transfers.${name}; })
      (builtins.attrNames transfers));
}
