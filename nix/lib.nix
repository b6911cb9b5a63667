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
#
# Rollout rings (optional; systemd 261 or later, see README "Staged rollouts"):
#   {
#     rings = [
#       { channel = "canary"; fraction = "10%"; }  # url: https://updates.example.com/canary
#       { channel = "beta"; url = "https://beta.example.com/appliance"; fraction = "20%"; }
#     ];
#     rolloutTag = "sysupdate-publish";            # optional; one tag for every ring
#   }
# Ring k follows its own channel on the machines in the cumulative band
# (f1+...+f(k-1), f1+...+fk] of `ConditionFraction=<tag> <percent>`; the rest follow `url`.
# A ring without `url` follows the channel beside the default one: `url` with its last
# path component replaced by the ring's channel name.
# Without `rings` (or with `rings = [ ]`) every output below is what it was before rings.
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

  # --- rollout rings -------------------------------------------------------------------
  digits = s: builtins.foldl' (n: c: n * 10 + (builtins.fromJSON c)) 0 (chars s);

  # "10%" / "2.5%" / "0.25%" -> permyriad (1000 / 250 / 25): systemd's parse_permyriad()
  # takes at most two decimals.
  permyriad = where: s:
    let m = builtins.match "([0-9]{1,3})(\\.([0-9]{1,2}))?%" s;
        frac = builtins.elemAt m 2;
        p = digits (builtins.elemAt m 0) * 100
          + (if frac == null then 0 else if builtins.stringLength frac == 1 then digits frac * 10 else digits frac);
    in
    if m == null then throw "${where}: fraction ${builtins.toJSON s} is not a percentage like \"10%\" or \"2.5%\" (at most two decimals)"
    else if p == 0 then throw "${where}: fraction ${s} selects no machine"
    else if p > 10000 then throw "${where}: fraction ${s} is more than 100%"
    else p;

  # 1000 -> "10%", 250 -> "2.5%", 25 -> "0.25%"
  percent = p:
    let whole = p / 100; rest = p - whole * 100; in
    if rest == 0 then "${toString whole}%"
    else if rest - rest / 10 * 10 == 0 then "${toString whole}.${toString (rest / 10)}%"
    else "${toString whole}.${if rest < 10 then "0" else ""}${toString rest}%";

  nameOk = builtins.match "[A-Za-z0-9_][A-Za-z0-9_.-]*";

  # "https://h/appliance/stable/" + "canary" -> "https://h/appliance/canary"
  sibling = where: url: channel:
    let m = builtins.match "([a-z0-9+.-]+://[^/]+/(.*/)?)[^/]+/*" url; in
    if m == null then throw "${where}: no `url`, and the default url ${builtins.toJSON url} has no last path component to replace by the channel name; give the ring a url"
    else "${builtins.head m}${channel}";

  # [{ channel; url?; fraction; }] -> [{ channel; url; lower; upper; conditions; }], checked.
  bands = { url, rings ? [ ], rolloutTag ? "sysupdate-publish", ... }:
    let
      tagged = if builtins.match "[A-Za-z0-9_.:-]+" rolloutTag != null then rolloutTag
        else throw "rolloutTag ${builtins.toJSON rolloutTag}: letters, digits and _ . : - only (it is one word of ConditionFraction=)";
      channels = map (r: r.channel) rings;
      step = acc: r:
        let
          where = "ring ${builtins.toJSON (r.channel or "?")}";
          channel = if nameOk (r.channel or "") != null then r.channel
            else throw "${where}: channel must be a name of letters, digits and _ . - (it names files and units)";
          upper = acc.total + permyriad where r.fraction;
          lower = acc.total;
        in
        if builtins.length (builtins.filter (c: c == channel) channels) > 1 then throw "${where}: two rings name the same channel"
        else if upper > 10000 then throw "${where}: the rings' fractions add up to more than 100% (${percent upper})"
        else {
          total = upper;
          bands = acc.bands ++ [{
            inherit channel lower upper;
            url = if (r.url or null) != null then r.url else sibling where url channel;
            # The band (lower, upper]: the tag's first `upper` machines, less its first `lower`.
            conditions = [ "${tagged} ${percent upper}" ]
              ++ (if lower > 0 then [ "!${tagged} ${percent lower}" ] else [ ]);
          }];
        };
      folded = builtins.foldl' step { total = 0; bands = [ ]; } rings;
    in
    {
      inherit (folded) bands total;
      # The machines no ring takes follow the default channel.
      defaultConditions = if rings == [ ] then [ ] else [ "!${tagged} ${percent folded.total}" ];
    };

  unitNamePrefix = "sysupdate-publish-ring-";
  ringDefinitions = channel: "/etc/sysupdate-rings/${channel}.d";
  conditionLines = cs: builtins.concatStringsSep "" (map (c: "ConditionFraction=${c}\n") cs);

  # Same sandbox as systemd 262's own systemd-sysupdate.service.
  sandbox = ''
    CapabilityBoundingSet=CAP_CHOWN CAP_FOWNER CAP_FSETID CAP_MKNOD CAP_SETFCAP CAP_SYS_ADMIN CAP_SETPCAP CAP_DAC_OVERRIDE CAP_LINUX_IMMUTABLE
    NoNewPrivileges=yes
    MemoryDenyWriteExecute=yes
    ProtectHostname=yes
    RestrictRealtime=yes
    RestrictNamespaces=net mnt
    RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
    SystemCallFilter=@system-service @mount
    SystemCallErrorNumber=EPERM
    SystemCallArchitectures=native
    LockPersonality=yes
  '';

  ringService = sysupdate: b: ''
    # Generated by sysupdate-publish (nix/lib.nix): the ${b.channel} ring, machines in
    # (${percent b.lower}, ${percent b.upper}] of the rollout, update from ${b.url}
    [Unit]
    Description=System Update from the ${b.channel} channel
    Documentation=man:systemd-sysupdate.service(8)
    Wants=network-online.target
    After=network-online.target
    ConditionVirtualization=!container
    ${conditionLines b.conditions}
    [Service]
    Type=simple
    NotifyAccess=main
    ExecStart=${sysupdate} --definitions=${ringDefinitions b.channel} update
    ${sandbox}'';

  # systemd's own timer schedule (systemd-sysupdate.timer).
  ringTimer = b: ''
    [Unit]
    Description=System Update from the ${b.channel} channel
    Documentation=man:systemd-sysupdate.service(8)
    ConditionVirtualization=!container

    [Timer]
    OnBootSec=15min
    OnUnitActiveSec=2h
    OnCalendar=Sat
    RandomizedDelaySec=4h
    Persistent=yes

    [Install]
    WantedBy=timers.target
  '';

  defaultDropIn = r: ''
    # Generated by sysupdate-publish (nix/lib.nix): machines in no ring update from the
    # default channel (/etc/sysupdate.d)
    [Unit]
    ${conditionLines r.defaultConditions}'';
in
rec {
  # { url; transfers; } -> { "50-uki" = { Transfer = { ... }; Source = { ... }; Target = { ... }; }; ... }
  # The shape of nixpkgs' `systemd.sysupdate.transfers` (which names the files <name>.conf).
  toSystemdSysupdateTransfers = { url, transfers, ... }:
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

  # --- rollout rings (see the top of this file) ----------------------------------------

  # The checked bands: { bands = [{ channel; url; lower; upper; conditions; }]; total;
  # defaultConditions; } (lower/upper/total in permyriad, conditions without the key).
  ringBands = bands;

  # { rings; transfers; ... } -> { canary = { "50-uki" = { Transfer; Source; Target; }; }; ... }:
  # every ring has the default's transfers, pointed at its own channel.
  ringTransfers = device:
    builtins.listToAttrs (map (b: {
      name = b.channel;
      value = toSystemdSysupdateTransfers { inherit (b) url; inherit (device) transfers; };
    }) (bands device).bands);

  # { rings; ... } -> { "sysupdate-publish-ring-canary.service" = "<unit text>"; ...timer; }
  # `sysupdate` is the systemd-sysupdate binary (a store path on NixOS).
  ringUnits = { sysupdate ? "/usr/lib/systemd/systemd-sysupdate" }: device:
    builtins.listToAttrs (builtins.concatMap (b: [
      { name = "${unitNamePrefix}${b.channel}.service"; value = ringService sysupdate b; }
      { name = "${unitNamePrefix}${b.channel}.timer"; value = ringTimer b; }
    ]) (bands device).bands);

  # The drop-in that keeps systemd's own systemd-sysupdate.service (the default channel,
  # /etc/sysupdate.d) to the machines in no ring; null without rings.
  defaultUnitDropIn = device:
    let r = bands device; in if r.defaultConditions == [ ] then null else defaultDropIn r;

  # Everything a device's /etc holds, as nested attribute sets of file text (what
  # `nix eval --write-to` writes as a directory tree):
  #   sysupdate.d/<prio>-<name>.transfer                    the default channel
  #   sysupdate-rings/<channel>.d/<prio>-<name>.transfer    one set per ring
  #   systemd/system/sysupdate-publish-ring-<channel>.{service,timer}
  #   systemd/system/systemd-sysupdate.service.d/50-sysupdate-publish-rings.conf
  # Without rings: only sysupdate.d.
  etcFiles = { sysupdate ? "/usr/lib/systemd/systemd-sysupdate" }: device:
    let r = bands device; in
    { "sysupdate.d" = transferFiles device; }
    // (if r.bands == [ ] then { } else {
      "sysupdate-rings" = builtins.listToAttrs (map (b: {
        name = "${b.channel}.d";
        value = transferFiles { inherit (b) url; inherit (device) transfers; };
      }) r.bands);
      systemd.system = ringUnits { inherit sysupdate; } device // {
        "systemd-sysupdate.service.d"."50-sysupdate-publish-rings.conf" = defaultUnitDropIn device;
      };
    });
}
