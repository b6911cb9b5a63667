{
  description = "Publish signed systemd-sysupdate channels from nix build outputs";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";
    systems.url = "github:nix-systems/default-linux";
  };

  outputs = { self, nixpkgs, systems }:
    let
      inherit (nixpkgs) lib;
      eachSystem = f: lib.genAttrs (import systems) (system: f nixpkgs.legacyPackages.${system});
    in
    {
      packages = eachSystem (pkgs: {
        default = pkgs.rustPlatform.buildRustPackage {
          pname = "sysupdate-publish";
          version = "0.1.0";

          src = lib.fileset.toSource {
            root = ./.;
            # Leave out build output and local channels: a `path:` flake reference copies them too.
            fileset = lib.fileset.difference ./. (lib.fileset.unions (map lib.fileset.maybeMissing [ ./target ./public ]));
          };
          cargoLock.lockFile = ./Cargo.lock;

          nativeBuildInputs = [ pkgs.installShellFiles ];
          nativeCheckInputs = [ pkgs.gnupg pkgs.xz ];

          # Completions and man pages come from the binary itself, so they always
          # match it (tests/first_hour.rs runs this snippet). Skipped when
          # cross-compiling: the build machine cannot run the binary.
          postInstall = lib.optionalString (pkgs.stdenv.buildPlatform.canExecute pkgs.stdenv.hostPlatform) ''
            installShellCompletion --cmd sysupdate-publish \
              --bash <($out/bin/sysupdate-publish completions bash) \
              --zsh <($out/bin/sysupdate-publish completions zsh) \
              --fish <($out/bin/sysupdate-publish completions fish)
            $out/bin/sysupdate-publish -q man --out man
            installManPage man/*.1
          '';

          # The integration tests start nginx, moto and a systemd-sysupdate chroot.
          doCheck = false;

          meta = {
            description = "Publish signed systemd-sysupdate channels from nix build outputs";
            license = with lib.licenses; [ mit asl20 ];
            mainProgram = "sysupdate-publish";
            platforms = lib.platforms.linux;
          };
        };
      });

      apps = eachSystem (pkgs: {
        default = {
          type = "app";
          program = lib.getExe self.packages.${pkgs.stdenv.hostPlatform.system}.default;
        };
      });

      devShells = eachSystem (pkgs: {
        default = pkgs.mkShell {
          packages = with pkgs; [ cargo rustc clippy rustfmt gnupg xz nix nginx debootstrap ];
        };
      });

      # Device side: services.sysupdate-publish-client (see nix/module.nix).
      nixosModules.default = import ./nix/module.nix;

      # Transfer definitions from plain nix, no nixpkgs needed (see nix/lib.nix).
      lib = import ./nix/lib.nix;
    };
}
