//! Records → gzip JSON Lines objects.
//!
//! Lines are streamed into a gzip encoder as they arrive (32 KiB at a time), so an open object
//! costs its compressed size in memory, not its raw size. Used by both pipelines.

use bytes::Bytes;
use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Write;

/// One gzip JSON Lines object being built.
pub struct ObjectEncoder {
    gz: GzEncoder<Vec<u8>>,
    /// Lines not yet compressed: the compressor (and its CRC-32) takes them in runs of
    /// [`STAGED_BYTES`], not a line and a newline at a time, which costs a call each.
    staged: Vec<u8>,
    raw_bytes: usize,
    records: usize,
}

/// Line bytes gathered before they are compressed.
const STAGED_BYTES: usize = 32 * 1024;

impl Default for ObjectEncoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ObjectEncoder {
    /// An empty object (gzip level 6, the `gzip` CLI default).
    pub fn new() -> Self {
        ObjectEncoder {
            gz: GzEncoder::new(Vec::with_capacity(64 * 1024), Compression::new(6)),
            staged: Vec::new(),
            raw_bytes: 0,
            records: 0,
        }
    }

    /// Appends one line; `line` must be a single JSON document without a newline.
    pub fn push_line(&mut self, line: &[u8]) {
        if self.staged.capacity() == 0 {
            self.staged.reserve_exact(STAGED_BYTES);
        }
        self.staged.extend_from_slice(line);
        self.staged.push(b'\n');
        self.raw_bytes += line.len() + 1;
        self.records += 1;
        if self.staged.len() >= STAGED_BYTES {
            self.compress_staged();
        }
    }

    fn compress_staged(&mut self) {
        // Writing into a Vec cannot fail.
        self.gz.write_all(&self.staged).expect("in-memory write");
        self.staged.clear();
    }

    /// Uncompressed bytes so far.
    pub fn raw_bytes(&self) -> usize {
        self.raw_bytes
    }

    /// Lines so far.
    pub fn records(&self) -> usize {
        self.records
    }

    /// Finishes the gzip stream.
    pub fn finish(mut self) -> Bytes {
        self.compress_staged();
        let mut out = self.gz.finish().expect("in-memory write");
        // Finished objects may wait together for their PUTs: keep their size, not the buffer's.
        out.shrink_to_fit();
        Bytes::from(out)
    }
}

/// Writes `raw` (a JSON object) with `fields` inserted first, as one compact line into `out`.
///
/// The object's own bytes are kept as they are (field order, number formatting); only
/// whitespace outside strings is dropped when the source was pretty-printed, because a
/// JSON Lines record cannot span lines. Field values in `fields` are JSON-escaped.
pub fn line_with_fields(raw: &[u8], fields: &[(&str, &str)], out: &mut Vec<u8>) {
    let start = raw
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(0);
    let body = &raw[start..];
    debug_assert!(body.first() == Some(&b'{'), "records are JSON objects");
    out.push(b'{');
    for (i, (k, v)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut *out, k).expect("in-memory write");
        out.push(b':');
        serde_json::to_writer(&mut *out, v).expect("in-memory write");
    }
    let rest = body[1..].trim_ascii();
    let is_empty = rest.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'}');
    if !fields.is_empty() && !is_empty {
        out.push(b',');
    }
    push_compact(rest, out);
}

/// Appends JSON text as one line: as it is, or without insignificant whitespace when the source
/// spans lines. Strings, numbers and field order are never touched.
pub fn push_compact(json: &[u8], out: &mut Vec<u8>) {
    let json = json.trim_ascii();
    if memchr::memchr2(b'\n', b'\r', json).is_some() {
        minify_into(json, out);
    } else {
        out.extend_from_slice(json);
    }
}

/// Drops insignificant whitespace (outside strings) from JSON text.
fn minify_into(json: &[u8], out: &mut Vec<u8>) {
    let (mut in_str, mut escaped) = (false, false);
    for &b in json {
        if in_str {
            out.push(b);
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_str = false;
            }
        } else if !b.is_ascii_whitespace() {
            in_str = b == b'"';
            out.push(b);
        }
    }
}

/// SHA-256 of a JSON text in canonical form: objects with their keys sorted, no insignificant
/// whitespace, scalars exactly as written. The same entry served twice with its keys in another
/// order or differently spaced hashes the same.
///
/// Works on the text itself (keys borrowed, values as raw slices): no value tree is built,
/// which keeps hashing well below the cost of compressing the same bytes.
pub fn content_hash(json: &str) -> Result<[u8; 32], serde_json::Error> {
    content_hash_and_field(json, "").map(|(h, _)| h)
}

/// [`content_hash`], also returning the raw value of one top-level `field` of an object,
/// read in the same pass.
pub fn content_hash_and_field<'a>(
    json: &'a str,
    field: &str,
) -> Result<([u8; 32], Option<&'a RawValue>), serde_json::Error> {
    let mut h = HashWriter(Sha256::new());
    let found = canonical(json, &mut h, field)?;
    Ok((h.0.finalize().into(), found))
}

/// The value of the top-level key `name` of the JSON object `json`, without building the
/// object: other values are skipped. `None` when `json` is not an object or lacks the key.
pub fn top_level_field<'a>(json: &'a str, name: &str) -> Option<&'a RawValue> {
    use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
    struct Find<'n>(&'n str);
    impl<'de> Visitor<'de> for Find<'_> {
        type Value = Option<&'de RawValue>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut found = None;
            while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                if found.is_none() && key == self.0 {
                    found = Some(map.next_value::<&'de RawValue>()?);
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(found)
        }
    }
    impl<'de> DeserializeSeed<'de> for Find<'_> {
        type Value = Option<&'de RawValue>;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_map(self)
        }
    }
    let mut de = serde_json::Deserializer::from_str(json);
    Find(name).deserialize(&mut de).ok().flatten()
}

/// Feeds serialised JSON straight into the hash, without intermediate strings.
struct HashWriter(Sha256);

impl Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// An object key, borrowed from the text unless it contains escapes.
#[derive(serde::Deserialize, PartialEq, Eq, PartialOrd, Ord)]
struct Key<'a>(#[serde(borrow)] std::borrow::Cow<'a, str>);

/// Hashes `json` canonically; returns the value of the top-level key `field`, if any.
fn canonical<'a>(
    json: &'a str,
    h: &mut HashWriter,
    field: &str,
) -> Result<Option<&'a RawValue>, serde_json::Error> {
    let json = json.trim_ascii();
    let mut found = None;
    match json.as_bytes().first() {
        Some(b'{') => {
            let map: BTreeMap<Key<'a>, &'a RawValue> = serde_json::from_str(json)?;
            h.0.update(b"{");
            for (i, (k, v)) in map.into_iter().enumerate() {
                if i > 0 {
                    h.0.update(b",");
                }
                if !field.is_empty() && k.0 == field {
                    found = Some(v);
                }
                serde_json::to_writer(&mut *h, &k.0).expect("hashing cannot fail");
                h.0.update(b":");
                canonical(v.get(), h, "")?;
            }
            h.0.update(b"}");
        }
        Some(b'[') => {
            let items: Vec<&RawValue> = serde_json::from_str(json)?;
            h.0.update(b"[");
            for (i, v) in items.into_iter().enumerate() {
                if i > 0 {
                    h.0.update(b",");
                }
                canonical(v.get(), h, "")?;
            }
            h.0.update(b"]");
        }
        _ => h.0.update(json.as_bytes()),
    }
    Ok(found)
}

/// The `_id` of a record: the first 128 bits of its content hash in hex, plus `-n` for the
/// n-th identical entry within the same second, so genuine repeats stay distinct while a
/// re-fetch of the same entries gets the same ids.
pub fn record_id(hash: &[u8; 32], occurrence: usize) -> String {
    let hex = hex::encode(&hash[..16]);
    if occurrence == 0 {
        hex
    } else {
        format!("{hex}-{occurrence}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use std::io::Read;

    fn line(raw: &str, fields: &[(&str, &str)]) -> String {
        let mut out = Vec::new();
        line_with_fields(raw.as_bytes(), fields, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn fields_go_first_and_source_bytes_are_kept() {
        assert_eq!(
            line(r#"{"b":1.50,"a":"x"}"#, &[("_id", "abc")]),
            r#"{"_id":"abc","b":1.50,"a":"x"}"#
        );
        assert_eq!(line(r#"  {}"#, &[("_id", "abc")]), r#"{"_id":"abc"}"#);
        assert_eq!(line(r#"{ }"#, &[("_id", "q\"")]), r#"{"_id":"q\""}"#);
        assert_eq!(line(r#"{"a":1}"#, &[]), r#"{"a":1}"#);
    }

    #[test]
    fn pretty_printed_input_becomes_one_line() {
        let raw = "{\n  \"a\": \"x y\\\" \\n z\",\n  \"b\": [1, 2]\n}";
        let l = line(raw, &[("_id", "i")]);
        assert_eq!(l, r#"{"_id":"i","a":"x y\" \n z","b":[1,2]}"#);
        let v: Value = serde_json::from_str(&l).unwrap();
        assert_eq!(v["a"], "x y\" \n z");
    }

    #[test]
    fn hash_ignores_key_order_and_spacing() {
        let a = content_hash(r#"{"a":1,"b":{"y":[1,2],"x":"s"}}"#).unwrap();
        let b = content_hash("{ \"b\": {\"x\":\"s\",\n \"y\":[1, 2]}, \"a\": 1 }").unwrap();
        let c = content_hash(r#"{"a":2,"b":{"y":[1,2],"x":"s"}}"#).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        // Escaped keys are compared by what they say.
        assert_eq!(
            content_hash(r#"{"\u0061":1}"#).unwrap(),
            content_hash(r#"{"a":1}"#).unwrap()
        );
        // Structure is part of the hash.
        assert_ne!(
            content_hash(r#"{"a":[1,2]}"#).unwrap(),
            content_hash(r#"{"a":"[1,2]"}"#).unwrap()
        );
        assert!(content_hash("{not json").is_err());
        let (h2, field) =
            content_hash_and_field(r#"{"a":1,"b":{"y":[1,2],"x":"s"}}"#, "b").unwrap();
        assert_eq!(h2, a);
        assert_eq!(field.unwrap().get(), r#"{"y":[1,2],"x":"s"}"#);
        let h = a;
        assert_eq!(record_id(&h, 0).len(), 32);
        assert_eq!(record_id(&h, 2), format!("{}-2", record_id(&h, 0)));
    }

    #[test]
    fn encoder_round_trips() {
        let mut enc = ObjectEncoder::new();
        enc.push_line(br#"{"a":1}"#);
        enc.push_line(br#"{"a":2}"#);
        assert_eq!((enc.records(), enc.raw_bytes()), (2, 16));
        let gz = enc.finish();
        let mut s = String::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_string(&mut s)
            .unwrap();
        assert_eq!(s, "{\"a\":1}\n{\"a\":2}\n");
    }
}
