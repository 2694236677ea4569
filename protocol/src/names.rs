//! Auction names: `<namespace>/<name>` with Kubernetes-valid parts. The protocol refuses
//! any other `auction` with `INVALID_MESSAGE`; the engine builds its ids with the same rule.

/// Longest namespace (a DNS-1123 label).
pub const MAX_NAMESPACE_BYTES: usize = 63;

/// Longest name (a DNS-1123 subdomain).
pub const MAX_NAME_BYTES: usize = 253;

/// Whether `namespace` and `name` are valid as Kubernetes checks them: lower-case
/// alphanumerics and `-` (and `.` in the name), alphanumeric at both ends of every
/// dot-separated label, so no `..` and no `.-` (names end up in paths and Redis keys).
pub fn valid_parts(namespace: &str, name: &str) -> bool {
    label_ok(namespace, MAX_NAMESPACE_BYTES, false) && label_ok(name, MAX_NAME_BYTES, true)
}

/// Splits `<namespace>/<name>` when both parts are valid.
pub fn split(auction: &str) -> Option<(&str, &str)> {
    auction
        .split_once('/')
        .filter(|(namespace, name)| valid_parts(namespace, name))
}

fn label_ok(s: &str, max: usize, dots: bool) -> bool {
    let alnum_ends = |part: &str| {
        part.bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
            && part
                .bytes()
                .last()
                .is_some_and(|b| b.is_ascii_alphanumeric())
    };
    !s.is_empty()
        && s.len() <= max
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || (dots && b == b'.')
        })
        && alnum_ends(s)
        && s.split('.').all(alnum_ends)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_names_only() {
        for good in ["shop/strat-1962", "a/b", "ns-1/lot.v2", "x/1"] {
            assert!(split(good).is_some(), "{good}");
        }
        for bad in [
            "",
            "shop",
            "Shop/x",
            "shop/X",
            "shop/",
            "/x",
            "shop/a..b",
            "shop/a.-b",
            "shop/-a",
            "shop/a-",
            "sh.op/a",
            "shop/a/b",
            "shop/a b",
        ] {
            assert!(split(bad).is_none(), "{bad}");
        }
        assert!(valid_parts(&"n".repeat(63), &"a".repeat(253)));
        assert!(!valid_parts(&"n".repeat(64), "a"));
        assert!(!valid_parts("n", &"a".repeat(254)));
    }
}
