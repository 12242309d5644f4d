//! How the agent prints an error: each cause once.

/// `err` and its causes, outermost first, joined by `": "` as `{:#}` joins them, but leaving out
/// a cause whose text the message so far already ends with. Many errors show their cause in
/// their own text and also return it as their `source()` (`tss_esapi::Error` shows its response
/// code's text and returns the code; a `thiserror` variant written `"{path}: {source}"` with a
/// `source` field): `{:#}` would print such a cause twice, or three times down a chain of them.
#[must_use]
pub fn error_chain(err: &anyhow::Error) -> String {
    let mut message = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if message.is_empty() {
            message = text;
        } else if !message.ends_with(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{path}: {source}")]
    struct Repeats {
        path: &'static str,
        #[source]
        source: std::io::Error,
    }

    #[test]
    fn a_cause_already_in_the_message_is_printed_once() {
        let io = std::io::Error::from_raw_os_error(libc::ENOENT);
        let err = anyhow::Error::new(Repeats {
            path: "/proc/nope",
            source: io,
        })
        .context("opening the state dir");
        assert_eq!(format!("{err:#}").matches("os error 2").count(), 2);
        assert_eq!(
            error_chain(&err),
            "opening the state dir: /proc/nope: No such file or directory (os error 2)"
        );
        // A cause not in the message is kept.
        let err = anyhow::Error::new(std::io::Error::from_raw_os_error(libc::EACCES))
            .context("reading x");
        assert_eq!(
            error_chain(&err),
            "reading x: Permission denied (os error 13)"
        );
        assert_eq!(error_chain(&anyhow::anyhow!("alone")), "alone");
    }
}
