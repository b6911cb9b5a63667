{
  description = "Example appliance, cross-compiled from x86_64-linux and updated with systemd-sysupdate";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";
    # This repository, for the device module; outside the checkout use its URL.
    sysupdate-publish.url = "path:../..";
    sysupdate-publish.inputs.nixpkgs.follows = "nixpkgs";
  };

  outputs = { self, nixpkgs, sysupdate-publish }:
    let
      inherit (nixpkgs) lib;

      # Everything is built here; the other architectures are cross-compiled.
      buildPlatform = "x86_64-linux";
      buildPkgs = nixpkgs.legacyPackages.${buildPlatform};
      systems = [ "x86_64-linux" "aarch64-linux" "riscv64-linux" ];
      versions = [ "17" "18" ];

      crossPkgsFor = system:
        if system == buildPlatform then buildPkgs
        else import nixpkgs { localSystem = buildPlatform; crossSystem = system; };

      appliance = system: version: lib.nixosSystem {
        modules = [
          sysupdate-publish.nixosModules.default
          ./configuration.nix
          {
            nixpkgs.pkgs = crossPkgsFor system;
            system.image.version = version;
          }
        ];
      };

      # What the channel serves for one version: payloads named as the
      # transfers' source patterns expect (appliance_<N>.efi.xz, store_<N>.img.xz).
      mkUpdate = { config, ... }:
        let version = config.system.image.version; in
        buildPkgs.runCommand "appliance-${version}-update" { nativeBuildInputs = [ buildPkgs.xz ]; } ''
          mkdir $out
          xz -T0 -6 --check=crc64 -c ${config.system.build.uki}/${config.system.boot.loader.ukiFile} \
            > $out/appliance_${version}.efi.xz
          xz -T0 -6 --check=crc64 -c ${config.system.build.image}/${config.image.repart.imageFileBasename}.store.raw \
            > $out/store_${version}.img.xz
        '';

      # A disk to flash (or boot in qemu with -drive if=virtio) for the first install.
      mkImage = { config, ... }:
        buildPkgs.runCommand "appliance-${config.system.image.version}-image" { nativeBuildInputs = [ buildPkgs.qemu ]; } ''
          mkdir $out
          qemu-img convert -f raw -O qcow2 ${config.system.build.image}/${config.image.repart.imageFile} $out/disk.qcow2
        '';
    in
    {
      packages = lib.genAttrs systems (system:
        lib.listToAttrs (lib.concatMap (version:
          let nixos = appliance system version; in [
            (lib.nameValuePair "appliance_${version}_image" (mkImage nixos))
            (lib.nameValuePair "appliance_${version}_update" (mkUpdate nixos))
          ]) versions));
    };
}
