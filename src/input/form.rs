//! `application/x-www-form-urlencoded` bodies into JSON objects.
//!
//! Senders nest differently (see `FormNesting`): `customer[name]=Ada`
//! (brackets, `tags[]` appends to an array) or Zapier's `customer__name=Ada`;
//! `auto` (the default) reads both.
//! Values stay strings: a form has no other type. A key repeated without `[]`
//! collects its values into an array. A key used both as a value and as an
//! object (`a=1&a[b]=2`) is a 400 naming both. Depth is bounded by the
//! key's nesting marks (each `[` and each `__` the style reads), at most
//! `MAX_MARKS`, a rule that `openapi.yaml` can state as a pattern.
//!
//! Keys and values must be UTF-8 once percent-decoded: `name=Jos%E9`
//! (Latin-1) is refused naming the field, never stored with U+FFFD in place
//! of what the sender meant (`form_urlencoded::parse` decodes lossily, so the
//! pairs are decoded here).

use percent_encoding::percent_decode;
use serde_json::{Map, Value};

use crate::config::FormNesting;

/// Most nesting marks (`[`, `__`) in one key, so at most 16 levels.
const MAX_MARKS: usize = 15;

/// Why a form body could not be turned into JSON.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FormError {
    #[error("form key `{0}` has more than {MAX_MARKS} nesting marks (`[` or `__`)")]
    TooDeep(String),
    #[error("form key `{key}` conflicts with an earlier key that gave `{path}` another shape")]
    Conflict { key: String, path: String },
    #[error("form key `{0}` is empty")]
    EmptyKey(String),
    /// The key or the value of a field is not UTF-8 after percent-decoding.
    /// `key` is shown with U+FFFD for the bytes that are not UTF-8;
    /// `pointer` is where the field would have gone (RFC 6901).
    #[error(
        "form field `{key}` is not valid UTF-8 in its {part} (after percent-decoding); \
         encode text as UTF-8, e.g. `é` as %C3%A9"
    )]
    InvalidUtf8 {
        key: String,
        pointer: String,
        part: &'static str,
    },
}

impl FormError {
    /// The RFC 6901 pointer of the field the error is about, when it names one.
    pub fn pointer(&self) -> Option<&str> {
        match self {
            FormError::InvalidUtf8 { pointer, .. } => Some(pointer),
            _ => None,
        }
    }
}

/// Parses a form body into a JSON object.
pub fn parse(body: &[u8], nesting: FormNesting) -> Result<Value, FormError> {
    let mut root = Map::new();
    for (key, value) in pairs(body) {
        let (key, value) = match (key, value) {
            (Ok(key), Ok(value)) => (key, value),
            (key, _) => {
                let part = if key.is_err() { "key" } else { "value" };
                let key = key.unwrap_or_else(|lossy| lossy);
                let (path, _) = split_key(&key, nesting);
                return Err(FormError::InvalidUtf8 {
                    pointer: pointer(&path),
                    key,
                    part,
                });
            }
        };
        if marks(&key, nesting) > MAX_MARKS {
            return Err(FormError::TooDeep(key));
        }
        let (path, append) = split_key(&key, nesting);
        if path.iter().any(|s| s.is_empty()) {
            return Err(FormError::EmptyKey(key.clone()));
        }
        insert(&mut root, &path, append, Value::String(value)).map_err(|at| {
            FormError::Conflict {
                key: key.to_string(),
                path: path[..=at].join("."),
            }
        })?;
    }
    Ok(Value::Object(root))
}

/// The body's `key=value` pairs, decoded as `application/x-www-form-urlencoded`
/// (WHATWG URL §5.1: split on `&`, skip empty pieces, split at the first `=`,
/// `+` is a space, then percent-decoding). A part that is not UTF-8 is an
/// `Err` carrying its lossy text, for the error message.
fn pairs(body: &[u8]) -> impl Iterator<Item = (Result<String, String>, Result<String, String>)> {
    body.split(|&b| b == b'&')
        .filter(|piece| !piece.is_empty())
        .map(|piece| {
            let (key, value) = match piece.iter().position(|&b| b == b'=') {
                Some(eq) => (&piece[..eq], &piece[eq + 1..]),
                None => (piece, &[][..]),
            };
            (decode(key), decode(value))
        })
}

/// One form-encoded part: `+` to space, percent-decoded, strictly UTF-8.
fn decode(raw: &[u8]) -> Result<String, String> {
    let spaced;
    let raw = if raw.contains(&b'+') {
        spaced = raw
            .iter()
            .map(|&b| if b == b'+' { b' ' } else { b })
            .collect::<Vec<u8>>();
        &spaced[..]
    } else {
        raw
    };
    let bytes: Vec<u8> = percent_decode(raw).collect();
    String::from_utf8(bytes).map_err(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// RFC 6901 pointer of a key's path (`customer[name]` → `/customer/name`).
fn pointer(path: &[&str]) -> String {
    path.iter()
        .map(|seg| format!("/{}", seg.replace('~', "~0").replace('/', "~1")))
        .collect()
}

/// The nesting marks of `key` that `nesting` reads. Each adds at most one
/// level, so a key has at most `marks + 1` path segments.
fn marks(key: &str, nesting: FormNesting) -> usize {
    let brackets = || key.bytes().filter(|b| *b == b'[').count();
    let underscores = || key.matches("__").count();
    match nesting {
        FormNesting::None => 0,
        FormNesting::Brackets => brackets(),
        FormNesting::DoubleUnderscore => underscores(),
        FormNesting::Auto => brackets() + underscores(),
    }
}

/// Splits a key into its path and whether it ends in `[]` (append).
fn split_key(key: &str, nesting: FormNesting) -> (Vec<&str>, bool) {
    match nesting {
        FormNesting::None => (vec![key], false),
        FormNesting::DoubleUnderscore => (key.split("__").collect(), false),
        FormNesting::Auto => {
            let (path, append) = split_key(key, FormNesting::Brackets);
            (
                path.into_iter().flat_map(|seg| seg.split("__")).collect(),
                append,
            )
        }
        FormNesting::Brackets => {
            let Some(open) = key.find('[') else {
                return (vec![key], false);
            };
            // Only `head[a][b]...` with balanced brackets nests; anything
            // else is taken literally.
            let (head, mut rest) = key.split_at(open);
            let mut path = vec![head];
            let mut append = false;
            while !rest.is_empty() {
                let Some(inner) = rest.strip_prefix('[') else {
                    return (vec![key], false);
                };
                let Some(close) = inner.find(']') else {
                    return (vec![key], false);
                };
                let seg = &inner[..close];
                rest = &inner[close + 1..];
                if seg.is_empty() {
                    if !rest.is_empty() {
                        return (vec![key], false);
                    }
                    append = true;
                } else {
                    path.push(seg);
                }
            }
            (path, append)
        }
    }
}

/// Inserts `value` at `path`. On a shape conflict returns the index of the
/// path segment where it happened.
fn insert(
    root: &mut Map<String, Value>,
    path: &[&str],
    append: bool,
    value: Value,
) -> Result<(), usize> {
    let mut node = root;
    for (i, seg) in path[..path.len() - 1].iter().enumerate() {
        let entry = node
            .entry((*seg).to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        node = entry.as_object_mut().ok_or(i)?;
    }
    let last = path.len() - 1;
    let key = path[last].to_owned();
    match (node.get_mut(&key), append) {
        (None, false) => {
            node.insert(key, value);
        }
        (None, true) => {
            node.insert(key, Value::Array(vec![value]));
        }
        (Some(Value::Array(items)), _) => items.push(value),
        (Some(existing @ Value::String(_)), _) => {
            let first = existing.take();
            *existing = Value::Array(vec![first, value]);
        }
        (Some(_), _) => return Err(last),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn brackets_nest_objects_and_arrays() {
        let v = parse(
            b"phone_number=%2B1+555&customer[name]=Ada+L&customer[crm_id]=0031&tags[]=a&tags[]=b",
            FormNesting::Brackets,
        )
        .unwrap();
        assert_eq!(
            v,
            json!({"phone_number": "+1 555", "customer": {"name": "Ada L", "crm_id": "0031"}, "tags": ["a", "b"]})
        );
    }

    #[test]
    fn double_underscore_nests_like_zapier_flattening() {
        let body = crate::fixtures::sample("zapier-form.txt");
        let v = parse(&body, FormNesting::DoubleUnderscore).unwrap();
        assert_eq!(v["customer"]["name"], "Ada Lovelace");
        assert_eq!(v["customer"]["crm_id"], "0031x00000ABC");
        assert_eq!(v["phone_number"], "+1 555-012-1234");
    }

    #[test]
    fn auto_reads_brackets_and_double_underscores() {
        let v = parse(
            b"customer[name]=Ada&customer__crm_id=7&a[b__c]=1",
            FormNesting::Auto,
        )
        .unwrap();
        assert_eq!(
            v,
            json!({"customer": {"name": "Ada", "crm_id": "7"}, "a": {"b": {"c": "1"}}})
        );
        let literal = parse(b"customer__name=Ada", FormNesting::Brackets).unwrap();
        assert_eq!(literal, json!({"customer__name": "Ada"}));
    }

    #[test]
    fn repeated_keys_collect_and_malformed_brackets_stay_literal() {
        let v = parse(b"a=1&a=2&b[x=3&c[x]y=4", FormNesting::Brackets).unwrap();
        assert_eq!(v, json!({"a": ["1", "2"], "b[x": "3", "c[x]y": "4"}));
    }

    #[test]
    fn shape_conflicts_and_empty_segments_are_errors() {
        assert!(matches!(
            parse(b"a=1&a[b]=2", FormNesting::Brackets),
            Err(FormError::Conflict { .. })
        ));
        assert!(matches!(
            parse(b"a__=1", FormNesting::DoubleUnderscore),
            Err(FormError::EmptyKey(_))
        ));
        let deep = format!("a{}=1", "[x]".repeat(16));
        assert!(matches!(
            parse(deep.as_bytes(), FormNesting::Brackets),
            Err(FormError::TooDeep(_))
        ));
        let deepest = format!("a{}=1", "__x".repeat(15));
        assert!(parse(deepest.as_bytes(), FormNesting::Auto).is_ok());
        let junk = format!("a{}=1", "[".repeat(16));
        assert!(parse(junk.as_bytes(), FormNesting::Brackets).is_err());
        assert!(parse(junk.as_bytes(), FormNesting::None).is_ok());
    }

    mod props {
        //! A JSON object of strings, arrays of strings and objects, written
        //! as a form in either nesting style, parses back to itself.

        use proptest::prelude::*;
        use serde_json::{Map, Value};

        use super::*;

        /// Keys that mean the same in every style: no `[`, `]` or `_`.
        fn key() -> impl Strategy<Value = String> {
            prop::collection::vec(
                prop_oneof![
                    prop::char::range('a', 'z'),
                    prop::char::range('0', '9'),
                    Just('-'),
                    Just(' '),
                    Just('é'),
                ],
                1..6,
            )
            .prop_map(String::from_iter)
        }

        /// Any text, `&`, `=`, `%`, `+` and line breaks included.
        fn text() -> impl Strategy<Value = String> {
            prop::collection::vec(any::<char>(), 0..8).prop_map(String::from_iter)
        }

        /// What a form can express: no empty objects, and arrays of at least
        /// two strings (a one-element array is a plain value in the
        /// double-underscore style, which has no `[]`).
        fn object(depth: u32) -> BoxedStrategy<Value> {
            let leaf = prop_oneof![
                text().prop_map(Value::String),
                prop::collection::vec(text().prop_map(Value::String), 2..4).prop_map(Value::Array),
            ];
            let field = if depth == 0 {
                leaf.boxed()
            } else {
                prop_oneof![3 => leaf, 1 => object(depth - 1)].boxed()
            };
            prop::collection::btree_map(key(), field, 1..5)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>()))
                .boxed()
        }

        /// Serialises `v` as a form, nesting with `style`.
        fn to_form(v: &Value, style: FormNesting) -> String {
            fn walk(
                path: &mut Vec<String>,
                v: &Value,
                style: FormNesting,
                out: &mut form_urlencoded::Serializer<'_, String>,
            ) {
                let key = |path: &[String], array: bool| match style {
                    FormNesting::Brackets => {
                        let mut k = path[0].clone();
                        for seg in &path[1..] {
                            k.push_str(&format!("[{seg}]"));
                        }
                        if array {
                            k.push_str("[]");
                        }
                        k
                    }
                    _ => path.join("__"),
                };
                match v {
                    Value::String(s) => {
                        out.append_pair(&key(path, false), s);
                    }
                    Value::Array(items) => {
                        for item in items {
                            out.append_pair(&key(path, true), item.as_str().unwrap_or_default());
                        }
                    }
                    Value::Object(map) => {
                        for (k, v) in map {
                            path.push(k.clone());
                            walk(path, v, style, out);
                            path.pop();
                        }
                    }
                    _ => unreachable!("forms hold strings, arrays and objects"),
                }
            }
            let mut out = form_urlencoded::Serializer::new(String::new());
            walk(&mut Vec::new(), v, style, &mut out);
            out.finish()
        }

        proptest! {
            #![proptest_config(ProptestConfig {
                // Found cases become named unit tests; no files beside the sources.
                failure_persistence: None,
                ..ProptestConfig::with_cases(200)
            })]

            #[test]
            fn brackets_round_trip(v in object(3)) {
                let form = to_form(&v, FormNesting::Brackets);
                prop_assert_eq!(&parse(form.as_bytes(), FormNesting::Brackets).unwrap(), &v, "{}", form);
                prop_assert_eq!(&parse(form.as_bytes(), FormNesting::Auto).unwrap(), &v, "{}", form);
            }

            #[test]
            fn double_underscores_round_trip(v in object(3)) {
                let form = to_form(&v, FormNesting::DoubleUnderscore);
                prop_assert_eq!(&parse(form.as_bytes(), FormNesting::DoubleUnderscore).unwrap(), &v, "{}", form);
                prop_assert_eq!(&parse(form.as_bytes(), FormNesting::Auto).unwrap(), &v, "{}", form);
            }
        }
    }

    #[test]
    fn decoding_follows_the_form_urlencoded_rules() {
        let v = parse(
            b"&a=x+y%2B%26z&&b&c==d&caf%C3%A9=%F0%9F%93%9E&e=%zz%4",
            FormNesting::None,
        )
        .unwrap();
        assert_eq!(
            v,
            json!({"a": "x y+&z", "b": "", "c": "=d", "café": "📞", "e": "%zz%4"})
        );
        // Agrees with `form_urlencoded` wherever the text is UTF-8.
        let body = b"a=x+y%2B%26z&b&c==d&caf%C3%A9=%F0%9F%93%9E&e=%zz%4";
        let theirs: Map<String, Value> = form_urlencoded::parse(body)
            .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
            .collect();
        assert_eq!(
            parse(body, FormNesting::None).unwrap(),
            Value::Object(theirs)
        );
    }

    #[test]
    fn text_that_is_not_utf8_is_refused_naming_the_field() {
        // Latin-1 `é`, percent-encoded, in a value.
        let err = parse(
            b"phone_number=%2B15550121234&customer[name]=Jos%E9",
            FormNesting::Auto,
        )
        .unwrap_err();
        assert_eq!(
            err,
            FormError::InvalidUtf8 {
                key: "customer[name]".into(),
                pointer: "/customer/name".into(),
                part: "value",
            }
        );
        assert!(err.to_string().contains("`customer[name]`"), "{err}");
        // Raw (not percent-encoded) bytes, and Zapier's nesting.
        let err = parse(b"customer__name=Jos\xe9", FormNesting::Auto).unwrap_err();
        assert_eq!(err.pointer(), Some("/customer/name"));
        // In a key: shown with U+FFFD, and the part named.
        let err = parse(b"na%E9me=x", FormNesting::None).unwrap_err();
        assert_eq!(
            err,
            FormError::InvalidUtf8 {
                key: "na\u{FFFD}me".into(),
                pointer: "/na\u{FFFD}me".into(),
                part: "key",
            }
        );
        // An overlong encoding and a lone surrogate are not UTF-8 either.
        for body in [&b"a=%C0%AF"[..], b"a=%ED%A0%80"] {
            assert!(
                matches!(
                    parse(body, FormNesting::None),
                    Err(FormError::InvalidUtf8 { .. })
                ),
                "{body:?}"
            );
        }
        // A real U+FFFD sent as UTF-8 is text like any other.
        let v = parse(b"a=%EF%BF%BD", FormNesting::None).unwrap();
        assert_eq!(v, json!({"a": "\u{FFFD}"}));
        // Pointer escaping (RFC 6901).
        let err = parse(b"a/b[c~d]=%FF", FormNesting::Brackets).unwrap_err();
        assert_eq!(err.pointer(), Some("/a~1b/c~0d"));
    }
}
