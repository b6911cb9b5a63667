//! The one rule for showing an error chain on one line.

/// The error and its sources joined by ": ", leaving out a source whose text
/// is already shown: thiserror types, walkdir and `with_context` often
/// repeat the OS error they wrap, while transport errors hide the useful
/// part (connection refused, certificate unknown) in their sources.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = String::new();
    let mut cur = Some(e);
    while let Some(err) = cur {
        let text = err.to_string();
        if !text.is_empty() && !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
        cur = err.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::chain;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot read build output x: {source}")]
    struct Outer {
        source: Middle,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("IO error for operation on x: {source}")]
    struct Middle {
        source: std::io::Error,
    }

    #[test]
    fn a_cause_already_shown_is_left_out_and_a_hidden_one_is_added() {
        let io = std::io::Error::from(std::io::ErrorKind::NotFound);
        let text = io.to_string();
        let e = Outer {
            source: Middle { source: io },
        };
        let shown = chain(&e);
        assert_eq!(shown.matches(&text).count(), 1, "{shown}");
        assert_eq!(
            shown.matches("IO error for operation").count(),
            1,
            "{shown}"
        );

        #[derive(Debug, thiserror::Error)]
        #[error("error sending request")]
        struct Send(#[source] std::io::Error);
        let refused = Send(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(chain(&refused).starts_with("error sending request: "));
        assert!(chain(&refused).contains("refused"), "{}", chain(&refused));
    }
}
