{
  description = "A system extension for one host OS version, and its data as a directory payload: a nixpkgs-free stand-in";

  # No inputs, like examples/minimal: /bin/sh and coreutils of the host
  # (`sandbox = false`), so it builds offline in seconds. A real extension
  # is an erofs or squashfs image with usr/lib/extension-release.d/ (mkosi,
  # or nixpkgs' tools); the publishing side does not change.
  outputs = { self }:
    let
      archs = { x86_64-linux = "x86-64"; aarch64-linux = "arm64"; riscv64-linux = "riscv64"; };
      # The host OS version the extension is built for: its os-release
      # VERSION_ID, which `%w` expands to on the device.
      hostVersion = "40";

      # One build output per version and target system: the extension image
      # `tools-<version>-<host>-<arch>.raw` (named as the transfer's
      # MatchPattern expands on a device with that host version), and the
      # directory `tools-data_<version>`, published as a url-tar payload.
      extension = target: version: builtins.derivation {
        name = "tools-${archs.${target}}-${version}-sysext";
        system = "x86_64-linux";
        builder = "/bin/sh";
        PATH = "/usr/bin:/bin";
        inherit version hostVersion;
        arch = archs.${target};
        args = [ "-c" ''
          set -eu
          mkdir "$out" && cd "$out"
          cat > "tools-$version-$hostVersion-$arch.raw" <<EOT
          Not a real extension image: a stand-in payload for the sysupdate-publish
          sysext example. A real one carries
          usr/lib/extension-release.d/extension-release.tools with:

          ID=fedora
          VERSION_ID=$hostVersion
          SYSEXT_LEVEL=1.0
          ARCHITECTURE=$arch
          EOT
          mkdir -p "tools-data_$version/share/tools"
          echo "tools $version for $arch" > "tools-data_$version/share/tools/VERSION"
          ln -s share/tools/VERSION "tools-data_$version/VERSION"
        '' ];
      };

      # The webapp component's image `webapp_<version>.raw`: versioned on
      # its own, released with `sysupdate-publish --component webapp`.
      webapp = target: version: builtins.derivation {
        name = "webapp-${archs.${target}}-${version}";
        system = "x86_64-linux";
        builder = "/bin/sh";
        PATH = "/usr/bin:/bin";
        inherit version;
        arch = archs.${target};
        args = [ "-c" ''
          set -eu
          mkdir "$out"
          echo "webapp $version for $arch: a stand-in container image" > "$out/webapp_$version.raw"
        '' ];
      };

      extensions = target: builtins.listToAttrs (map (v: {
        name = "tools_${v}";
        value = extension target v;
      }) [ "1" "2" "3" ] ++ map (v: {
        name = "webapp_${v}";
        value = webapp target v;
      }) [ "7" "8" ]);
    in {
      packages = builtins.mapAttrs (target: _: extensions target) archs;
    };
}
