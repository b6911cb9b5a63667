//! Transfer files and helpers the transfer tests share.

use std::path::Path;

use super::{parse_str, Specifiers, Transfer, TransferError};
use crate::pattern::Pattern;

pub(super) const UKI: &str = "[Transfer]
ProtectVersion=%A

[Source]
Type=url-file
Path=https://updates.example.com/stable/%a/
MatchPattern=appliance_@v.efi.xz

[Target]
Type=regular-file
Path=/EFI/Linux
PathRelativeTo=boot
MatchPattern=appliance_@v+@l-@d.efi \\
             appliance_@v+@l.efi \\
             appliance_@v.efi
Mode=0444
TriesLeft=3
TriesDone=0
InstancesMax=2
";

pub(super) const STORE: &str = "[Source]
Type=url-file
Path=https://updates.example.com/stable/%a/
MatchPattern=store_@v.img.xz

[Target]
Type=regular-file
Path=/var/lib/appliance
MatchPattern=store_@v.img
";

pub(super) fn spec() -> Specifiers {
    Specifiers {
        arch: "x86-64".into(),
        ..Default::default()
    }
}

pub(super) fn parse(text: &str) -> Result<Transfer, TransferError> {
    parse_str("t", Path::new("t.transfer"), text, &spec())
}

pub(super) fn ok(text: &str) -> Transfer {
    parse(text).unwrap_or_else(|e| panic!("{e}"))
}

pub(super) fn pats(p: &[Pattern]) -> Vec<&str> {
    p.iter().map(Pattern::as_str).collect()
}

/// A minimal valid transfer with `extra` appended to [Source].
pub(super) fn with_source(extra: &str) -> String {
    format!("[Source]\nType=url-file\nPath=https://x/\n{extra}\n[Target]\nPath=/x\n")
}
