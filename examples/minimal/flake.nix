{
  description = "A nixpkgs-free stand-in appliance, cross-built on x86_64-linux for three architectures";

  # No inputs: every derivation uses the host's /bin/sh, coreutils and xz
  # (needs `sandbox = false`), so it builds offline in seconds.
  outputs = { self }:
    let
      # nix system -> systemd architecture (what `%a` expands to on the device)
      archs = { x86_64-linux = "x86-64"; aarch64-linux = "arm64"; riscv64-linux = "riscv64"; };
      versions = [ "16" "17" "18" "19" "20" ];

      # The payloads of one version for one target system. The build platform is
      # always x86_64-linux; only the content depends on the target, as with a
      # real cross-compiled appliance. `compress = false` gives the raw files.
      update = target: version: compress: builtins.derivation {
        name = "appliance-${archs.${target}}-${version}-update${if compress then "" else "-raw"}";
        system = "x86_64-linux";
        builder = "/bin/sh";
        PATH = "/usr/bin:/bin";
        inherit version compress;
        arch = archs.${target};
        args = [ "-c" ''
          set -eu
          mkdir "$out" && cd "$out"
          cat > "appliance_$version.efi" <<EOT
          Not a real unified kernel image: a stand-in payload for the
          sysupdate-publish examples, built on x86_64-linux for $arch.
          A real UKI carries the same os-release fields in its .osrel section.

          ID=appliance
          NAME="Example Appliance"
          IMAGE_ID=appliance
          IMAGE_VERSION=$version
          ARCHITECTURE=$arch
          EOT
          seq -f "appliance $version store image for $arch, block %04g of 0128" 1 128 > "store_$version.img"
          if [ -n "$compress" ]; then
            xz -T1 -6 --check=crc64 "appliance_$version.efi" "store_$version.img"
          fi
        '' ];
      };

      updates = target: builtins.listToAttrs (builtins.concatMap (v: [
        { name = "appliance_${v}_update"; value = update target v true; }
        { name = "appliance_${v}_update_raw"; value = update target v false; }
      ]) versions);
    in {
      packages = builtins.mapAttrs (target: _: updates target) archs;
    };
}
