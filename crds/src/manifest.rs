//! Reading an Auction manifest strictly, for the places where no API server stands between
//! a person's YAML and the operator (standalone mode, tools).
//!
//! A Kubernetes API server prunes fields its schema does not know (and `kubectl` warns or
//! refuses under its field validation), but plain serde ignores them: `reserve: 50000`
//! (meant `reservePrice`) would open the auction with no reserve. [`from_yaml`] therefore
//! refuses every unknown field, naming its path and the nearest known name ("unknown
//! field `spec.reserve`, did you mean `reservePrice`?"), and names the path of a type
//! error ("spec.startingPrice: invalid type: floating point `100.5`, expected i64").
//!
//! The known fields are those of the CRD's own OpenAPI schema ([`crate::crd`]), so the
//! strict reader and the API server agree on every field. The Rust types stay lenient
//! (no `deny_unknown_fields`): objects read from an API server are already pruned, and an
//! operator older than its CRD must still read them.

use std::sync::OnceLock;

use serde_json::Value;

use crate::Auction;

/// `apiVersion` of every Auction.
pub const API_VERSION: &str = "gavel.dev/v1alpha1";
/// `kind` of every Auction.
pub const KIND: &str = "Auction";

/// The fields of `metadata` (Kubernetes' ObjectMeta); its maps (labels, annotations) are
/// free-form.
const METADATA_FIELDS: [&str; 15] = [
    "name",
    "namespace",
    "labels",
    "annotations",
    "generateName",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "finalizers",
    "ownerReferences",
    "managedFields",
    "selfLink",
];

/// A field the Auction schema does not have.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownField {
    /// Where it is, such as `spec.reserve` or `spec.increments[1].stepp`.
    pub path: String,
    /// The known field of the same object its name is closest to, if any is close.
    pub suggestion: Option<String>,
    /// The known fields of that object.
    pub known: Vec<String>,
}

impl std::fmt::Display for UnknownField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "unknown field `{}`", self.path)?;
        match &self.suggestion {
            Some(name) => write!(f, ", did you mean `{name}`?"),
            None => write!(f, " (known fields here: {})", self.known.join(", ")),
        }
    }
}

/// Why a manifest is not an Auction.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// The text is not YAML (or has keys that are not strings).
    #[error("not valid YAML: {0}")]
    Yaml(String),
    /// Another kind of object.
    #[error("expected apiVersion {API_VERSION} and kind {KIND}, got {api_version} {kind}")]
    NotAnAuction {
        /// The manifest's apiVersion, or `(none)`.
        api_version: String,
        /// The manifest's kind, or `(none)`.
        kind: String,
    },
    /// Fields the schema does not have (all of them, in document order).
    #[error("{}", join(.0))]
    UnknownFields(Vec<UnknownField>),
    /// A field of the wrong type, or a required one missing; the message starts with its
    /// path.
    #[error("not a valid Auction: {0}")]
    Invalid(String),
}

fn join(fields: &[UnknownField]) -> String {
    fields
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Reads one Auction from YAML, refusing unknown fields and naming the path of any type
/// error. Never panics, whatever the input.
pub fn from_yaml(text: &str) -> Result<Auction, ManifestError> {
    let yaml: serde_yaml::Value =
        serde_yaml::from_str(text).map_err(|e| ManifestError::Yaml(e.to_string()))?;
    let value = serde_json::to_value(&yaml).map_err(|e| ManifestError::Yaml(e.to_string()))?;
    check_kind(&value)?;
    let unknown = unknown_fields(&value);
    if !unknown.is_empty() {
        return Err(ManifestError::UnknownFields(unknown));
    }
    from_value(value)
}

/// Reads one Auction from its JSON form (as YAML or an API server gives it), naming the
/// path of a type error; unknown fields are not looked at (see [`unknown_fields`]).
pub fn from_value(value: Value) -> Result<Auction, ManifestError> {
    serde_path_to_error::deserialize(value)
        .map_err(|e| ManifestError::Invalid(with_path(&e.path().to_string(), e.inner())))
}

fn with_path(path: &str, error: &impl std::fmt::Display) -> String {
    if path == "." || path.is_empty() {
        error.to_string()
    } else {
        format!("{path}: {error}")
    }
}

fn check_kind(value: &Value) -> Result<(), ManifestError> {
    let api_version = value.get("apiVersion").and_then(Value::as_str);
    let kind = value.get("kind").and_then(Value::as_str);
    if api_version == Some(API_VERSION) && kind == Some(KIND) {
        return Ok(());
    }
    Err(ManifestError::NotAnAuction {
        api_version: api_version.unwrap_or("(none)").to_owned(),
        kind: kind.unwrap_or("(none)").to_owned(),
    })
}

/// The CRD's OpenAPI schema, as JSON.
fn schema() -> &'static Value {
    static SCHEMA: OnceLock<Value> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let crd = serde_json::to_value(crate::crd()).unwrap_or_default();
        crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
    })
}

/// Every field of `manifest` (an Auction as JSON) that the CRD's schema does not have.
/// `status` is not looked at (a manifest's status is ignored).
pub fn unknown_fields(manifest: &Value) -> Vec<UnknownField> {
    let mut out = Vec::new();
    let Some(map) = manifest.as_object() else {
        return out;
    };
    let root = schema();
    let props = root["properties"].as_object();
    let top = ["apiVersion", "kind", "metadata", "spec", "status"];
    for (key, value) in map {
        match key.as_str() {
            "status" | "apiVersion" | "kind" => {}
            "metadata" => {
                if let Some(meta) = value.as_object() {
                    for name in meta.keys() {
                        if !METADATA_FIELDS.contains(&name.as_str()) {
                            out.push(unknown(
                                format!("metadata.{name}"),
                                name,
                                METADATA_FIELDS.iter().copied(),
                            ));
                        }
                    }
                }
            }
            _ => match props.and_then(|p| p.get(key)) {
                Some(schema) => walk(value, schema, key, &mut out),
                None => out.push(unknown(key.clone(), key, top.into_iter())),
            },
        }
    }
    out
}

fn walk(value: &Value, schema: &Value, path: &str, out: &mut Vec<UnknownField>) {
    match value {
        Value::Object(map) => {
            let Some(props) = schema["properties"].as_object() else {
                return; // a free-form object
            };
            for (key, v) in map {
                let p = format!("{path}.{key}");
                match props.get(key) {
                    Some(s) => walk(v, s, &p, out),
                    None => out.push(unknown(p, key, props.keys().map(String::as_str))),
                }
            }
        }
        Value::Array(items) if schema["items"].is_object() => {
            for (i, item) in items.iter().enumerate() {
                walk(item, &schema["items"], &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

fn unknown<'a>(path: String, name: &str, known: impl Iterator<Item = &'a str>) -> UnknownField {
    let known: Vec<String> = known.map(str::to_owned).collect();
    UnknownField {
        path,
        suggestion: nearest(name, known.iter().map(String::as_str)).map(str::to_owned),
        known,
    }
}

/// The known name `typed` most likely meant: the same but for case, one that starts with
/// the other (`reserve` → `reservePrice`), else the closest by Jaro-Winkler similarity if
/// it is close (`extention` → `extension`).
pub fn nearest<'a>(typed: &str, known: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let typed = typed.to_ascii_lowercase();
    let mut best: Option<(&str, f64)> = None;
    for name in known {
        let lower = name.to_ascii_lowercase();
        let length_gap = typed.len().abs_diff(lower.len()) as f64;
        let score = if lower == typed {
            3.0
        } else if typed.len() >= 3 && (lower.starts_with(&typed) || typed.starts_with(&lower)) {
            2.0 - length_gap / 100.0
        } else {
            strsim::jaro_winkler(&typed, &lower)
        };
        if best.is_none_or(|(_, s)| score > s) {
            best = Some((name, score));
        }
    }
    best.filter(|(_, score)| *score >= 0.85)
        .map(|(name, _)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = "apiVersion: gavel.dev/v1alpha1\nkind: Auction\nmetadata: {name: a, namespace: shop}\nspec:\n  title: x\n  currency: USD\n  startingPrice: 100\n  endsAt: '2030-01-01T00:00:00Z'\n";

    fn err(extra: &str) -> String {
        from_yaml(&format!("{HEAD}{extra}"))
            .expect_err(extra)
            .to_string()
    }

    #[test]
    fn unknown_fields_name_their_path_and_the_nearest_known_name() {
        for (extra, expected) in [
            (
                "  increments: [{from: 0, step: 1}]\n  reserve: 50000\n",
                "unknown field `spec.reserve`, did you mean `reservePrice`?",
            ),
            (
                "  increments: [{from: 0, step: 1}]\n  softclose: {window: 1s, extension: 1s}\n",
                "unknown field `spec.softclose`, did you mean `softClose`?",
            ),
            (
                "  increments: [{from: 0, step: 1}, {from: 10, stepp: 2}]\n",
                "unknown field `spec.increments[1].stepp`, did you mean `step`?",
            ),
            (
                "  increments: [{from: 0, step: 1}]\n  endAt: '2030-01-01T00:00:00Z'\n",
                "unknown field `spec.endAt`, did you mean `endsAt`?",
            ),
            (
                "  increments: [{from: 0, step: 1}]\n  colour: red\n",
                "unknown field `spec.colour` (known fields here: ",
            ),
        ] {
            let e = err(extra);
            assert!(e.contains(expected), "{extra}: {e}");
        }
        // Every unknown field at once.
        let e = err("  increments: [{from: 0, step: 1}]\n  reserve: 1\n  cancelled: true\n");
        assert!(
            e.contains("`spec.reserve`") && e.contains("`spec.cancelled`, did you mean `cancel`?"),
            "{e}"
        );
        // Top level and metadata too; labels and annotations stay free-form; status is
        // ignored.
        let text = HEAD.replace("namespace: shop}", "namespace: shop, labels: {any: x}}")
            + "  increments: [{from: 0, step: 1}]\nstatus: {whatever: 1}\n";
        from_yaml(&text).unwrap();
        let e = from_yaml(&format!("{text}sepc: {{}}\n"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unknown field `sepc`, did you mean `spec`?"),
            "{e}"
        );
    }

    #[test]
    fn type_errors_and_missing_fields_name_their_path() {
        let e = err("  increments: [{from: 0, step: 1.5}]\n");
        assert!(
            e.contains("spec.increments[0].step: invalid type: floating point `1.5`, expected i64"),
            "{e}"
        );
        let e = from_yaml(&HEAD.replace("  title: x\n", ""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("spec: missing field `title`"), "{e}");
        for (text, expected) in [
            ("{", "not valid YAML"),
            ("[1, 2]", "expected apiVersion gavel.dev/v1alpha1"),
            ("apiVersion: v1\nkind: Pod\n", "got v1 Pod"),
            ("{1: x}", "expected apiVersion"),
        ] {
            let e = from_yaml(text).unwrap_err().to_string();
            assert!(e.contains(expected), "{text}: {e}");
        }
    }

    #[test]
    fn suggestions_only_when_close() {
        let known = [
            "title",
            "currency",
            "startingPrice",
            "startsAt",
            "reservePrice",
        ];
        for (typed, want) in [
            ("Title", Some("title")),
            ("currancy", Some("currency")),
            ("start", Some("startsAt")),
            ("startPrice", Some("startingPrice")),
            ("reserve_price", Some("reservePrice")),
            ("zzz", None),
            ("", None),
        ] {
            assert_eq!(nearest(typed, known.iter().copied()), want, "{typed}");
        }
    }
}
