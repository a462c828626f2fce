//! The vectors a write carries, as names and sizes: all the vector checks
//! need, read from a gRPC message or a REST body without building the
//! numbers. A REST body's vectors are taken as raw JSON text and their
//! elements counted, not parsed (a 768-dimension upsert of 8 points is
//! ~120 KB of JSON); payloads and every other field are scanned past.

use std::collections::BTreeMap;

use qdrant_client::qdrant as pb;
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

/// One vector of a point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VectorSize {
    /// A dense vector of this many dimensions.
    Dense(usize),
    /// A sparse, multi or inference vector (text, image, object): no size to check.
    Other,
}

/// A point's vectors by name; `""` is the unnamed one.
pub type Sizes = BTreeMap<String, VectorSize>;

/// A gRPC point's vectors (`None`: the point sets none).
pub fn grpc(vectors: Option<&pb::Vectors>) -> Sizes {
    use pb::vectors::VectorsOptions;
    match vectors.and_then(|v| v.vectors_options.as_ref()) {
        None => Sizes::new(),
        Some(VectorsOptions::Vector(v)) => Sizes::from([(String::new(), grpc_vector(v))]),
        Some(VectorsOptions::Vectors(named)) => named
            .vectors
            .iter()
            .map(|(name, v)| (name.clone(), grpc_vector(v)))
            .collect(),
    }
}

fn grpc_vector(vector: &pb::Vector) -> VectorSize {
    match &vector.vector {
        Some(pb::vector::Vector::Dense(d)) => VectorSize::Dense(d.data.len()),
        // The deprecated form: dense unless it carries sparse indices or a multi count.
        #[allow(deprecated)]
        None if vector.indices.is_none() && vector.vectors_count.is_none() => {
            VectorSize::Dense(vector.data.len())
        }
        _ => VectorSize::Other,
    }
}

/// A REST write body's points (`points` or the `batch` form), each as its
/// id (as JSON text, for messages) and its vectors; points without vectors
/// are left out. `Ok(None)`: JSON, but not shaped as a write cutover reads,
/// so the upstream judges it. `Err`: not JSON, or vectors that are neither
/// a list nor named.
pub fn rest(body: &[u8]) -> Result<Option<Vec<(String, Sizes)>>, String> {
    let write: RestWrite = match serde_json::from_slice(body) {
        Ok(write) => write,
        Err(err) if err.is_data() => return Ok(None),
        Err(err) => return Err(format!("the request body is not JSON: {err}")),
    };
    let mut points = Vec::new();
    for point in write.points.unwrap_or_default() {
        let id = point.id.to_string();
        let Some(vector) = point.vector else {
            continue;
        };
        let sizes = if vector.get().starts_with('[') {
            Sizes::from([(String::new(), json_vector(vector))])
        } else if let Ok(named) = serde_json::from_str::<BTreeMap<String, &RawValue>>(vector.get())
        {
            named
                .into_iter()
                .map(|(name, v)| (name, json_vector(v)))
                .collect()
        } else {
            return Err(format!(
                "point {id}: `vector` is neither a list nor named vectors"
            ));
        };
        points.push((id, sizes));
    }
    if let Some(batch) = write.batch {
        let Some(vectors) = batch.vectors else {
            return Ok(Some(points));
        };
        // One list of vectors, a vector per point; or such a list per name.
        let lists: BTreeMap<String, Vec<&RawValue>> = if vectors.get().starts_with('[') {
            serde_json::from_str(vectors.get()).map(|list| BTreeMap::from([(String::new(), list)]))
        } else {
            serde_json::from_str(vectors.get())
        }
        .map_err(|_| "`batch.vectors` is neither a list nor named lists".to_string())?;
        for (i, id) in batch.ids.iter().enumerate() {
            let sizes: Sizes = lists
                .iter()
                .filter_map(|(name, list)| Some((name.clone(), json_vector(list.get(i)?))))
                .collect();
            if !sizes.is_empty() {
                points.push((id.to_string(), sizes));
            }
        }
    }
    Ok(Some(points))
}

/// One vector as JSON text. A dense vector's elements are counted, not
/// parsed: the first tells numbers (dense) from lists (multi), and the
/// commas give the length. A list that mixes the two is not a vector; the
/// upstreams refuse it.
fn json_vector(vector: &RawValue) -> VectorSize {
    let Some(elements) = vector.get().strip_prefix('[') else {
        return VectorSize::Other;
    };
    match elements.trim_start().bytes().next() {
        Some(b']') => VectorSize::Dense(0),
        Some(b'-' | b'0'..=b'9') => {
            VectorSize::Dense(elements.bytes().filter(|b| *b == b',').count() + 1)
        }
        _ => VectorSize::Other,
    }
}

#[derive(Deserialize)]
struct RestWrite<'a> {
    #[serde(borrow)]
    points: Option<Vec<RestPoint<'a>>>,
    #[serde(borrow)]
    batch: Option<RestBatch<'a>>,
}

#[derive(Deserialize)]
struct RestPoint<'a> {
    #[serde(default)]
    id: Value,
    #[serde(borrow)]
    vector: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct RestBatch<'a> {
    #[serde(default)]
    ids: Vec<Value>,
    #[serde(borrow)]
    vectors: Option<&'a RawValue>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn read(body: Value) -> Vec<(String, Sizes)> {
        rest(body.to_string().as_bytes()).unwrap().unwrap()
    }

    fn sizes(entries: &[(&str, VectorSize)]) -> Sizes {
        entries.iter().map(|(n, s)| (n.to_string(), *s)).collect()
    }

    #[test]
    fn reads_unnamed_named_and_other_vectors_of_each_point() {
        let body = json!({ "points": [
            { "id": 1, "vector": [0.5, 1, -2e-3], "payload": { "blob": [1, 2, 3] } },
            { "id": "a-b", "vector": {
                "small": [1.0, 2.0],
                "sparse": { "indices": [1], "values": [0.5] },
                "multi": [[1.0], [2.0]],
                "doc": { "text": "hello", "model": "m" }
            } },
            { "id": 3, "payload": {} }
        ] });
        use VectorSize::{Dense, Other};
        assert_eq!(
            read(body),
            vec![
                ("1".into(), sizes(&[("", Dense(3))])),
                (
                    "\"a-b\"".into(),
                    sizes(&[
                        ("small", Dense(2)),
                        ("sparse", Other),
                        ("multi", Other),
                        ("doc", Other)
                    ])
                ),
            ]
        );
    }

    #[test]
    fn reads_lists_written_with_spaces() {
        let body = br#"{ "points": [ { "id": 1, "vector": [ 1.0 , -2 ,3e4 ] },
            { "id": 2, "vector": [ [ 1.0 ], [ 2.0 ] ] } ] }"#;
        use VectorSize::{Dense, Other};
        assert_eq!(
            rest(body).unwrap().unwrap(),
            vec![
                ("1".into(), sizes(&[("", Dense(3))])),
                ("2".into(), sizes(&[("", Other)])),
            ]
        );
    }

    #[test]
    fn reads_the_batch_form_point_by_point() {
        use VectorSize::Dense;
        let unnamed = json!({ "batch": { "ids": [1, 2, 3], "vectors": [[1.0], [1.0, 2.0]] } });
        assert_eq!(
            read(unnamed),
            vec![
                ("1".into(), sizes(&[("", Dense(1))])),
                ("2".into(), sizes(&[("", Dense(2))])),
            ]
        );
        let named = json!({ "batch": { "ids": [7], "vectors": { "a": [[1.0, 2.0]], "b": [] } } });
        assert_eq!(read(named), vec![("7".into(), sizes(&[("a", Dense(2))]))]);
    }

    #[test]
    fn what_is_not_a_write_is_left_to_the_upstream_and_what_is_not_json_refused() {
        assert_eq!(rest(b"[1, 2]").unwrap(), None);
        assert_eq!(rest(br#"{"points": 5}"#).unwrap(), None);
        assert!(rest(b"{\"points\": [").unwrap_err().contains("not JSON"));
        let err = rest(br#"{"points": [{"id": 4, "vector": 5}]}"#).unwrap_err();
        assert_eq!(err, "point 4: `vector` is neither a list nor named vectors");
    }
}
