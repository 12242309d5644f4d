//! URLs as the agent sends to and prints them: which hosts plain HTTP may reach with a secret
//! (this machine only), and URLs printed with their password hidden.

/// A plain `http://` URL to a host other than this machine: what it carries crosses the network
/// in cleartext ([`wattest_shared::net::is_exposed`]).
#[must_use]
pub fn is_exposed(url: &reqwest::Url) -> bool {
    wattest_shared::net::is_exposed(url.scheme(), url.host_str())
}

/// Checks that `enroll` may send the enrollment token to `oracle`: an `https://` URL, or
/// `http://` to this machine, or any `http://` URL with `allow_http` (`--allow-http`).
///
/// # Errors
/// `oracle` is not a URL, or is plain HTTP to another host without `allow_http`: the message
/// says why and what to pass (the URL printed with [`redact_url`]).
pub fn check_enroll_transport(oracle: &str, allow_http: bool) -> Result<(), String> {
    let shown = redact_url(oracle);
    let url = reqwest::Url::parse(oracle).map_err(|err| {
        format!("--oracle {shown} is not a URL ({err}); e.g. https://oracle.example.org")
    })?;
    match url.scheme() {
        "https" => Ok(()),
        "http" if allow_http || !is_exposed(&url) => Ok(()),
        "http" => Err(format!(
            "refusing --oracle {shown}: it is plain http:// to {}, not this machine (127.0.0.0/8, ::1, localhost), so the enrollment token would travel in cleartext for anyone on the path to read and reuse; use an https:// URL, or pass --allow-http to send it over plain HTTP anyway",
            url.host_str().unwrap_or("?")
        )),
        other => Err(format!(
            "--oracle {shown}: the scheme {other}:// is not supported; use an https:// URL"
        )),
    }
}

/// `url` with the password of its user info (`scheme://user:password@host/…`) replaced by
/// `***`; everything else as given (not normalised). A string that is not a URL with user
/// info comes back unchanged.
#[must_use]
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let authority_start = scheme_end + 3;
    let rest = &url[authority_start..];
    let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_len];
    // The user info ends at the last '@' of the authority (a password may hold an '@').
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    let Some(colon) = authority[..at].find(':') else {
        return url.to_owned();
    };
    format!(
        "{}{}:***{}",
        &url[..authority_start],
        &authority[..colon],
        &url[authority_start + at..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_url_hides_the_password_only() {
        assert_eq!(
            redact_url("https://node:s3cr%40t@oracle.example.org:8443/v1/nodes?x=1"),
            "https://node:***@oracle.example.org:8443/v1/nodes?x=1"
        );
        // An '@' in the password, no path.
        assert_eq!(
            redact_url("http://u:p@ss@127.0.0.1:8080"),
            "http://u:***@127.0.0.1:8080"
        );
        // No password, no user info, or not a URL: unchanged (not normalised).
        for same in [
            "http://user@127.0.0.1:8080",
            "http://127.0.0.1:8080",
            "https://oracle.example.org/a@b:c",
            "not a url",
            "",
        ] {
            assert_eq!(redact_url(same), same);
        }
    }

    #[test]
    fn plain_http_reaches_only_this_machine_without_allow_http() {
        for ok in [
            "https://oracle.example.org",
            "http://127.0.0.1:8080",
            "http://127.1.2.3",
            "http://[::1]:8080/",
            "http://LOCALHOST:8080",
        ] {
            assert_eq!(check_enroll_transport(ok, false), Ok(()), "{ok}");
        }
        for exposed in [
            "http://192.0.2.1",
            "http://oracle.example.org:8080",
            "http://[2001:db8::1]/",
            "http://localhost.example.org",
        ] {
            let err = check_enroll_transport(exposed, false).expect_err(exposed);
            assert!(err.contains("--allow-http"), "{err}");
            assert_eq!(check_enroll_transport(exposed, true), Ok(()), "{exposed}");
        }
        let err = check_enroll_transport("http://u:pw@192.0.2.1", false).expect_err("refused");
        assert!(!err.contains("pw"), "{err}");
        assert!(check_enroll_transport("ftp://192.0.2.1", true).is_err());
        assert!(check_enroll_transport("192.0.2.1:8080", true).is_err());
    }
}
