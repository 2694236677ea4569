//! `.gavel/env`: the addresses of a platform started by `make up`, as `KEY=value` lines
//! that a shell can `source` and that the CLI reads for its defaults.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Default location of the file, relative to the repository root.
pub const DEFAULT_PATH: &str = ".gavel/env";

/// Parses `KEY=value` lines; blank lines and `#` comments are skipped, surrounding single
/// or double quotes removed, an optional leading `export ` ignored.
pub fn parse(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let l = l.strip_prefix("export ").unwrap_or(l);
            let (k, v) = l.split_once('=')?;
            let v = v.trim();
            let v = v
                .strip_prefix('\'')
                .and_then(|v| v.strip_suffix('\''))
                .or_else(|| v.strip_prefix('"').and_then(|v| v.strip_suffix('"')))
                .unwrap_or(v);
            Some((k.trim().to_owned(), v.to_owned()))
        })
        .collect()
}

/// Renders variables as `export KEY='value'` lines, so that `source .gavel/env` hands them
/// to the programs started afterwards.
pub fn render(vars: &[(&str, String)]) -> String {
    let mut out =
        String::from("# Written by `gavel-local up` (make up); removed by `make down`.\n");
    for (k, v) in vars {
        out.push_str(&format!("export {k}='{}'\n", v.replace('\'', "'\\''")));
    }
    out
}

/// Finds `.gavel/env` in the current directory or one of its ancestors, or at
/// `$GAVEL_ENV_FILE`.
pub fn locate() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("GAVEL_ENV_FILE") {
        return Some(PathBuf::from(p));
    }
    let cwd = std::env::current_dir().ok()?;
    cwd.ancestors()
        .map(|d| d.join(DEFAULT_PATH))
        .find(|p| p.is_file())
}

/// Reads the file at `path`; an absent or unreadable file gives no variables.
pub fn read(path: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(path)
        .map(|t| parse(&t))
        .unwrap_or_default()
}

/// A variable from the process environment, else from `.gavel/env` if present.
pub fn lookup(key: &str) -> Option<String> {
    match std::env::var(key) {
        Ok(v) if !v.is_empty() => Some(v),
        _ => locate().and_then(|p| read(&p).remove(key)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let text = render(&[
            ("GAVEL_WS_URLS", "ws://a/v1/ws,ws://b/v1/ws".into()),
            ("ODD", "it's".into()),
        ]);
        let vars = parse(&text);
        assert_eq!(vars["GAVEL_WS_URLS"], "ws://a/v1/ws,ws://b/v1/ws");
        assert_eq!(parse("export A=\"x\"\n# c\n\nB=y")["A"], "x");
        assert_eq!(parse("B=y")["B"], "y");
    }
}
