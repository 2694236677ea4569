//! Credentials out of logs and errors: connection URLs (`redis://:pw@host`,
//! `postgres://user:pw@host/db`) are shown with their password replaced, so that an
//! error about an unreachable server never prints the secret that reaches it.

/// `url` with the password of its userinfo (`user:PASSWORD@`) replaced by `***`.
/// Text that is not a URL with credentials is returned unchanged.
pub fn url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &authority[..at];
    let redacted = match userinfo.split_once(':') {
        Some((user, _password)) => format!("{user}:***"),
        None if userinfo.is_empty() => return url.to_owned(),
        // A lone token (`redis://TOKEN@host`) is a secret too.
        None => "***".to_owned(),
    };
    format!("{}{}{}", &url[..scheme_end + 3], redacted, &rest[at..])
}

#[cfg(test)]
mod tests {
    use super::url;

    #[test]
    fn passwords_are_replaced() {
        assert_eq!(url("redis://:pw@h:6379/0"), "redis://:***@h:6379/0");
        assert_eq!(
            url("postgres://gavel:p@ss:w@rd@pg:5432/gavel?sslmode=require"),
            "postgres://gavel:***@pg:5432/gavel?sslmode=require"
        );
        assert_eq!(url("rediss://tok@h"), "rediss://***@h");
        assert_eq!(
            url("postgres://postgres@127.0.0.1/g"),
            "postgres://***@127.0.0.1/g"
        );
        assert_eq!(url("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(url("not a url"), "not a url");
        assert_eq!(url("redis://h/path@x"), "redis://h/path@x");
    }
}
