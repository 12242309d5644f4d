//! Which hosts plain HTTP may carry a secret to: this machine only. Shared by the agent (the
//! enrollment token) and `wattest-verify` (the auditor's token, and the keys it trusts).

/// Whether `host` (a URL's host as `url::Url::host_str` gives it, an IPv6 address in brackets
/// or not) is this machine: 127.0.0.0/8, ::1 or `localhost` in any case. Plain HTTP to it
/// crosses no network an attacker could sit on.
#[must_use]
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Whether a URL of `scheme` to `host` (`None`: a URL without a host) is plain `http://` to a
/// host other than this machine: what it carries crosses the network in cleartext.
#[must_use]
pub fn is_exposed(scheme: &str, host: Option<&str>) -> bool {
    scheme == "http" && !host.is_some_and(is_loopback_host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_machine_counts_as_loopback() {
        for host in [
            "127.0.0.1",
            "127.1.2.3",
            "[::1]",
            "::1",
            "localhost",
            "LOCALHOST",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "192.0.2.1",
            "10.0.0.1",
            "[::ffff:192.0.2.1]",
            "localhost.example",
            "127.0.0.1.example",
            "oracle.example",
            "",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
        assert!(is_exposed("http", Some("192.0.2.1")));
        assert!(is_exposed("http", None));
        assert!(!is_exposed("http", Some("127.0.0.1")));
        assert!(!is_exposed("https", Some("192.0.2.1")));
    }
}
