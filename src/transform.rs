//! Green transforms and vector checks for writes that carry vectors
//! (upserts and vector updates). Each side's copy is made to fit its own
//! collection, checked against that collection's vector sizes (read from
//! the upstream at start, on reload, and on the first write to a collection
//! not known then), and refused whole, before anything is sent, when it
//! does not fit. The checks read only names and sizes (`vector_sizes`);
//! a write is decoded and rebuilt only when a transform changes it.
//! Under `same` with both sides' sizes alike there is nothing to check:
//! both sides judge a write alike.
//!
//! - `same`: both sides get the body as sent, byte for byte. Dense vectors
//!   are checked; sparse, multi and inference vectors are left to each side.
//! - `named`: the application sends named vectors; each side keeps the names
//!   its collection has.
//! - `embed`: blue's vectors are checked and sent as they came; green's
//!   vector is computed from a payload text field by an embedding service.
//!   A vector update carries no text, so green has nothing to change and is
//!   not sent one.

use std::collections::{BTreeMap, HashMap};

use bytes::{BufMut, Bytes, BytesMut};
use prost::Message;
use qdrant_client::qdrant as pb;
use serde::Serialize;
use serde_json::{Value, json};

use crate::embedder::EmbedSpec;
use crate::routing::Side;
use crate::upstream::{Protocol, Upstream};
use crate::vector_sizes::{self, Sizes, VectorSize};

/// How green's copy of a write is made from blue's.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Transform {
    #[default]
    Same,
    Named,
    Embed(EmbedSpec),
}

/// A collection's dense vector sizes: `""` is the unnamed vector.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Schema(pub BTreeMap<String, u64>);

impl Schema {
    /// Reads a collection's vector sizes from its upstream; `None` (logged)
    /// when it cannot be read, and then writes to it go unchecked.
    pub async fn fetch(upstream: &Upstream, collection: &str) -> Option<Schema> {
        let path = crate::rest::renamed_uri(&hyper::Uri::from_static("/collections/_"), collection);
        let request = hyper::Request::get(path)
            .body(crate::upstream::full(Bytes::new()))
            .expect("a valid path");
        let result = async {
            let (answer, _) = crate::whole::answer(upstream, Protocol::Rest, request)
                .await
                .map_err(|e| e.to_string())?;
            if !answer.succeeded(Protocol::Rest) {
                return Err(answer.failure(Protocol::Rest));
            }
            let info: Value = serde_json::from_slice(answer.body()).map_err(|e| e.to_string())?;
            Schema::parse(&info["result"]["config"]["params"]["vectors"])
                .ok_or_else(|| "no vector config in the collection info".to_string())
        }
        .await;
        match result {
            Ok(schema) => Some(schema),
            Err(err) => {
                tracing::warn!(upstream = %upstream.name, collection, %err, "cannot read the collection's vector sizes; its writes go unchecked");
                None
            }
        }
    }

    /// `{"size": N, ...}` (one unnamed vector) or `{"name": {"size": N, ...}, ...}`.
    fn parse(vectors: &Value) -> Option<Schema> {
        if let Some(size) = vectors.get("size").and_then(Value::as_u64) {
            return Some(Schema(BTreeMap::from([(String::new(), size)])));
        }
        let named = vectors.as_object()?;
        Some(Schema(
            named
                .iter()
                .filter_map(|(name, params)| Some((name.clone(), params.get("size")?.as_u64()?)))
                .collect(),
        ))
    }
}

/// What a route knows to shape its writes: its transform and each side's schema.
#[derive(Debug, Clone, Copy)]
pub struct Shaping<'a> {
    pub transform: &'a Transform,
    pub blue: Option<&'a Schema>,
    pub green: Option<&'a Schema>,
}

/// The write, as each side gets it. `green: None` means green gets no copy.
pub struct Shaped {
    pub blue: Bytes,
    pub green: Option<Bytes>,
    /// Green's copy still needs its embeddings.
    pub pending: Option<EmbedSpec>,
}

/// A write that does not fit: refused before anything is sent.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refusal(pub String);

impl Shaped {
    pub fn side(&self, side: Side) -> Option<&Bytes> {
        match side {
            Side::Blue => Some(&self.blue),
            Side::Green => self.green.as_ref(),
        }
    }
}

/// A gRPC message's point: an upsert's or a vector update's.
trait GrpcPoint {
    fn id(&self) -> &Option<pb::PointId>;
    fn vectors(&self) -> Option<&pb::Vectors>;
    fn vectors_mut(&mut self) -> &mut Option<pb::Vectors>;
}

impl GrpcPoint for pb::PointStruct {
    fn id(&self) -> &Option<pb::PointId> {
        &self.id
    }
    fn vectors(&self) -> Option<&pb::Vectors> {
        self.vectors.as_ref()
    }
    fn vectors_mut(&mut self) -> &mut Option<pb::Vectors> {
        &mut self.vectors
    }
}

impl GrpcPoint for pb::PointVectors {
    fn id(&self) -> &Option<pb::PointId> {
        &self.id
    }
    fn vectors(&self) -> Option<&pb::Vectors> {
        self.vectors.as_ref()
    }
    fn vectors_mut(&mut self) -> &mut Option<pb::Vectors> {
        &mut self.vectors
    }
}

impl Shaping<'_> {
    fn schema(&self, side: Side) -> Option<&Schema> {
        match side {
            Side::Blue => self.blue,
            Side::Green => self.green,
        }
    }

    /// Whether writes on this route need decoding at all. Under `same`,
    /// not when both collections have the same vector sizes: each side's
    /// own check then gives the same verdict, so a write one side refuses
    /// the other refuses too, and the client gets Qdrant's own answer.
    pub fn applies(&self) -> bool {
        match self.transform {
            Transform::Same => self.blue != self.green,
            _ => true,
        }
    }

    /// Whether `side`'s copy keeps the vector `name`: every one, but under
    /// `named` only those its collection has (when its sizes are known).
    fn keeps(&self, side: Side, name: &str) -> bool {
        match (self.transform, self.schema(side)) {
            (Transform::Named, Some(schema)) => schema.0.contains_key(name),
            _ => true,
        }
    }

    /// Refuses a point that a side it goes to cannot take. Under `same`
    /// only dense vectors are checked: sparse, multi and inference vectors go
    /// as they came and each side judges them. The other transforms rebuild
    /// vectors, which cutover does for dense ones only.
    fn check(&self, id: &str, vectors: &Sizes) -> Result<(), Refusal> {
        if *self.transform != Transform::Same && vectors.values().any(|v| *v == VectorSize::Other) {
            return Err(Refusal(format!(
                "point {id}: cutover checks and transforms dense vectors only; send sparse, multi or inference vectors to a route with transform `same`"
            )));
        }
        self.check_side(Side::Blue, id, vectors)?;
        if !matches!(self.transform, Transform::Embed(_)) {
            self.check_side(Side::Green, id, vectors)?;
        }
        Ok(())
    }

    fn check_side(&self, side: Side, id: &str, vectors: &Sizes) -> Result<(), Refusal> {
        let Some(schema) = self.schema(side) else {
            return Ok(());
        };
        let mut kept = vectors.iter().filter(|(name, _)| self.keeps(side, name));
        if *self.transform == Transform::Named
            && !vectors.is_empty()
            && kept.clone().next().is_none()
        {
            return Err(Refusal(format!(
                "point {id}: none of its vectors ({}) is one {} has ({}); fix: send the vector names of both collections",
                names(vectors.keys()),
                side.as_str(),
                names(schema.0.keys())
            )));
        }
        kept.try_for_each(|(name, size)| {
            let VectorSize::Dense(len) = *size else {
                return Ok(());
            };
            let label = if name.is_empty() {
                "the unnamed vector".to_string()
            } else {
                format!("vector `{name}`")
            };
            match schema.0.get(name) {
                Some(&expected) if expected == len as u64 => Ok(()),
                Some(&expected) => Err(Refusal(format!(
                    "point {id}: {label} has {len} dimensions, but {}'s collection expects {expected}; nothing was written",
                    side.as_str()
                ))),
                None => Err(Refusal(format!(
                    "point {id}: {label} is not in {}'s collection (it has {}); nothing was written",
                    side.as_str(),
                    names(schema.0.keys())
                ))),
            }
        })
    }

    /// Under `embed` green's vectors come from the text, which a vector
    /// update does not carry: green gets no copy of one.
    fn green_takes_vector_updates(&self) -> bool {
        !matches!(self.transform, Transform::Embed(_))
    }

    fn grpc_check<P: GrpcPoint>(&self, points: &[P]) -> Result<(), Refusal> {
        points.iter().try_for_each(|point| {
            self.check(&grpc_id(point.id()), &vector_sizes::grpc(point.vectors()))
        })
    }

    /// `side`'s copy of gRPC points: under `named` the vector names its
    /// collection has; under `embed`, green's without vectors (computed
    /// later from the text).
    fn grpc_copy<P: GrpcPoint>(&self, side: Side, points: &mut [P]) {
        use pb::vectors::VectorsOptions;
        for point in points {
            let vectors = point.vectors_mut();
            if side == Side::Green && matches!(self.transform, Transform::Embed(_)) {
                *vectors = None;
            } else if let Some(VectorsOptions::Vectors(named)) =
                vectors.as_mut().and_then(|v| v.vectors_options.as_mut())
            {
                named.vectors.retain(|name, _| self.keeps(side, name));
            }
        }
    }

    /// Shapes a gRPC write (one uncompressed frame) for both sides.
    /// `Ok(None)`: checked, and both sides take it as it came.
    pub fn grpc(&self, method: &str, frame: &[u8]) -> Result<Option<Shaped>, Refusal> {
        let Some(message) = frame.get(5..) else {
            return Ok(None);
        };
        let bad = |e: prost::DecodeError| Refusal(format!("cannot decode the request: {e}"));
        match method {
            "Upsert" => {
                let upsert = pb::UpsertPoints::decode(message).map_err(bad)?;
                self.grpc_check(&upsert.points)?;
                if *self.transform == Transform::Same {
                    return Ok(None);
                }
                let (mut blue, mut green) = (upsert.clone(), upsert);
                self.grpc_copy(Side::Blue, &mut blue.points);
                self.grpc_copy(Side::Green, &mut green.points);
                Ok(Some(self.shaped(frame_of(&blue), Some(frame_of(&green)))))
            }
            "UpdateVectors" => {
                let update = pb::UpdatePointVectors::decode(message).map_err(bad)?;
                self.grpc_check(&update.points)?;
                if *self.transform == Transform::Same {
                    return Ok(None);
                }
                let (mut blue, mut green) = (update.clone(), update);
                self.grpc_copy(Side::Blue, &mut blue.points);
                self.grpc_copy(Side::Green, &mut green.points);
                let green = self.green_takes_vector_updates().then(|| frame_of(&green));
                Ok(Some(Shaped {
                    blue: frame_of(&blue),
                    green,
                    pending: None,
                }))
            }
            _ => Ok(None),
        }
    }

    /// `side`'s copy of a REST write in the points form, as in `grpc_copy`.
    fn rest_copy(&self, side: Side, body: &mut Value) {
        let Some(points) = body.get_mut("points").and_then(Value::as_array_mut) else {
            return;
        };
        for point in points.iter_mut().filter_map(Value::as_object_mut) {
            if side == Side::Green && matches!(self.transform, Transform::Embed(_)) {
                point.remove("vector");
            } else if let Some(named) = point.get_mut("vector").and_then(Value::as_object_mut) {
                named.retain(|name, _| self.keeps(side, name));
            }
        }
    }

    /// Shapes a REST write body (`upsert`: PUT points; `update_vectors`: PUT
    /// points/vectors). `Ok(None)`: checked (or not a write cutover reads),
    /// and both sides take it as it came.
    pub fn rest(&self, label: &str, body: &[u8]) -> Result<Option<Shaped>, Refusal> {
        if !carries_vectors(label) {
            return Ok(None);
        }
        let Some(points) = vector_sizes::rest(body).map_err(Refusal)? else {
            return Ok(None);
        };
        for (id, vectors) in &points {
            self.check(id, vectors)?;
        }
        if *self.transform == Transform::Same {
            return Ok(None);
        }
        let mut blue: Value = serde_json::from_slice(body)
            .map_err(|e| Refusal(format!("the request body is not JSON: {e}")))?;
        if label == "upsert" {
            points_form(&mut blue)?;
        }
        let mut green = blue.clone();
        self.rest_copy(Side::Blue, &mut blue);
        self.rest_copy(Side::Green, &mut green);
        let json = |v: &Value| Bytes::from(serde_json::to_vec(v).expect("JSON values serialize"));
        if label == "update_vectors" {
            let green = self.green_takes_vector_updates().then(|| json(&green));
            return Ok(Some(Shaped {
                blue: json(&blue),
                green,
                pending: None,
            }));
        }
        Ok(Some(self.shaped(json(&blue), Some(json(&green)))))
    }

    fn shaped(&self, blue: Bytes, green: Option<Bytes>) -> Shaped {
        let pending = match self.transform {
            Transform::Embed(spec) => Some(spec.clone()),
            _ => None,
        };
        Shaped {
            blue,
            green,
            pending,
        }
    }
}

/// The writes whose vectors are checked and transformed, by method label
/// (gRPC's and REST's).
pub fn carries_vectors(label: &str) -> bool {
    matches!(
        label,
        "Upsert" | "UpdateVectors" | "upsert" | "update_vectors"
    )
}

fn names<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let names: Vec<String> = names
        .map(|n| {
            if n.is_empty() {
                "unnamed".to_string()
            } else {
                format!("`{n}`")
            }
        })
        .collect();
    names.join(", ")
}

/// REST's batch form (`{"batch": {"ids", "vectors", "payloads"}}`) as the points form.
fn points_form(body: &mut Value) -> Result<(), Refusal> {
    let Some(batch) = body.get("batch").cloned() else {
        return Ok(());
    };
    let ids = batch["ids"].as_array().cloned().unwrap_or_default();
    let vector_at = |i: usize| -> Value {
        match &batch["vectors"] {
            Value::Array(list) => list.get(i).cloned().unwrap_or(Value::Null),
            Value::Object(named) => Value::Object(
                named
                    .iter()
                    .filter_map(|(name, list)| Some((name.clone(), list.get(i)?.clone())))
                    .collect(),
            ),
            _ => Value::Null,
        }
    };
    let points: Vec<Value> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let mut point = json!({ "id": id, "vector": vector_at(i) });
            if let Some(payload) = batch["payloads"].get(i) {
                point["payload"] = payload.clone();
            }
            point
        })
        .collect();
    let object = body
        .as_object_mut()
        .ok_or_else(|| Refusal("the request body is not a JSON object".into()))?;
    object.remove("batch");
    object.insert("points".into(), Value::Array(points));
    Ok(())
}

fn grpc_id(id: &Option<pb::PointId>) -> String {
    use pb::point_id::PointIdOptions;
    match id.as_ref().and_then(|id| id.point_id_options.as_ref()) {
        Some(PointIdOptions::Num(n)) => n.to_string(),
        Some(PointIdOptions::Uuid(u)) => u.clone(),
        None => "?".into(),
    }
}

fn frame_of(message: &impl Message) -> Bytes {
    let len = message.encoded_len();
    let mut out = BytesMut::with_capacity(5 + len);
    out.put_u8(0);
    out.put_u32(len as u32);
    message
        .encode(&mut out)
        .expect("a buffer of the encoded length");
    out.freeze()
}

/// Fills in green's embeddings: each point's text (payload field
/// `spec.text_field`) embedded, as its unnamed or named vector. Used on the
/// write path and, for a write whose embedding failed, by the replayer.
pub async fn embed(spec: &EmbedSpec, protocol: Protocol, body: &Bytes) -> Result<Bytes, String> {
    let missing = |id: String| {
        format!(
            "point {id} has no text in payload field `{}` to embed",
            spec.text_field
        )
    };
    match protocol {
        Protocol::Grpc => {
            let mut upsert = pb::UpsertPoints::decode(body.get(5..).unwrap_or_default())
                .map_err(|e| e.to_string())?;
            let texts = upsert
                .points
                .iter()
                .map(|p| {
                    match p
                        .payload
                        .get(&spec.text_field)
                        .and_then(|v| v.kind.as_ref())
                    {
                        Some(pb::value::Kind::StringValue(text)) => Ok(text.clone()),
                        _ => Err(missing(grpc_id(&p.id))),
                    }
                })
                .collect::<Result<Vec<_>, _>>()?;
            let vectors = crate::embedder::embed(spec, &texts).await?;
            for (point, vector) in upsert.points.iter_mut().zip(vectors) {
                point.vectors = Some(match &spec.vector {
                    None => vector.into(),
                    Some(name) => pb::Vectors {
                        vectors_options: Some(pb::vectors::VectorsOptions::Vectors(
                            pb::NamedVectors {
                                vectors: HashMap::from([(name.clone(), vector.into())]),
                            },
                        )),
                    },
                });
            }
            Ok(frame_of(&upsert))
        }
        Protocol::Rest => {
            let mut upsert: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
            let points = upsert["points"]
                .as_array_mut()
                .ok_or("no points to embed")?;
            let texts = points
                .iter()
                .map(|p| {
                    p["payload"][&spec.text_field]
                        .as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| missing(p["id"].to_string()))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let vectors = crate::embedder::embed(spec, &texts).await?;
            for (point, vector) in points.iter_mut().zip(vectors) {
                point["vector"] = match &spec.vector {
                    None => json!(vector),
                    Some(name) => json!({ name: vector }),
                };
            }
            Ok(Bytes::from(
                serde_json::to_vec(&upsert).map_err(|e| e.to_string())?,
            ))
        }
    }
}

/// Every target's schema as last read, by (upstream, collection).
pub type Schemas = BTreeMap<(String, String), Schema>;

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(sizes: &[(&str, u64)]) -> Schema {
        Schema(sizes.iter().map(|(n, d)| (n.to_string(), *d)).collect())
    }

    /// Shaping under `transform` between two known schemas.
    fn known<'a>(transform: &'a Transform, blue: &'a Schema, green: &'a Schema) -> Shaping<'a> {
        Shaping {
            transform,
            blue: Some(blue),
            green: Some(green),
        }
    }

    /// Why `shaping` refuses this REST upsert (it must).
    fn refusal(shaping: &Shaping, body: Value) -> String {
        shaping
            .rest("upsert", body.to_string().as_bytes())
            .err()
            .expect("refused")
            .0
    }

    #[test]
    fn reads_both_shapes_of_vector_config() {
        assert_eq!(
            Schema::parse(&json!({ "size": 4, "distance": "Dot" }))
                .unwrap()
                .0,
            BTreeMap::from([(String::new(), 4)])
        );
        assert_eq!(
            Schema::parse(&json!({ "a": { "size": 4 }, "b": { "size": 8 } }))
                .unwrap()
                .0,
            BTreeMap::from([("a".to_string(), 4), ("b".to_string(), 8)])
        );
    }

    #[test]
    fn same_checks_only_when_the_sides_sizes_differ() {
        let (four, also_four, eight) = (schema(&[("", 4)]), schema(&[("", 4)]), schema(&[("", 8)]));
        let same = |blue, green| Shaping {
            transform: &Transform::Same,
            blue,
            green,
        };
        assert!(!same(Some(&four), Some(&also_four)).applies());
        assert!(!same(None, None).applies());
        assert!(same(Some(&four), Some(&eight)).applies());
        assert!(same(Some(&four), None).applies());
        let named = known(&Transform::Named, &four, &four);
        assert!(named.applies());
    }

    #[test]
    fn same_sends_a_fitting_write_as_it_came_and_leaves_other_vectors_to_the_sides() {
        let (blue, green) = (
            schema(&[("dense", 2)]),
            schema(&[("dense", 2), ("extra", 5)]),
        );
        let s = known(&Transform::Same, &blue, &green);
        let rest = json!({ "points": [{ "id": 1, "vector": {
            "dense": [1.0, 2.0],
            "sparse": { "indices": [3], "values": [0.5] },
            "multi": [[1.0], [2.0]]
        } }] });
        assert!(
            s.rest("upsert", rest.to_string().as_bytes())
                .unwrap()
                .is_none()
        );
        let upsert = pb::UpsertPoints {
            collection_name: "docs".into(),
            points: vec![pb::PointStruct::new(
                1,
                pb::NamedVectors::default()
                    .add_vector("dense", vec![1.0, 2.0])
                    .add_vector("sparse", pb::Vector::new_sparse(vec![3u32], vec![0.5f32])),
                qdrant_client::Payload::new(),
            )],
            ..Default::default()
        };
        assert!(s.grpc("Upsert", &frame_of(&upsert)).unwrap().is_none());
        let too_long = json!({ "points": [{ "id": 2, "vector": { "dense": [1.0, 2.0, 3.0] } }] });
        let err = refusal(&s, too_long);
        assert!(err.contains("3 dimensions, but blue's"), "{err}");
    }

    #[test]
    fn transforms_refuse_vectors_they_cannot_rebuild() {
        let (blue, green) = (schema(&[("dense", 2)]), schema(&[("dense", 2)]));
        let s = known(&Transform::Named, &blue, &green);
        let sparse = json!({ "points": [{ "id": 1, "vector": {
            "dense": [1.0, 2.0],
            "sparse": { "indices": [3], "values": [0.5] }
        } }] });
        let err = refusal(&s, sparse);
        assert!(err.contains("dense vectors only"), "{err}");
    }

    #[test]
    fn same_refuses_a_vector_either_side_cannot_take() {
        let (blue, green) = (schema(&[("", 4)]), schema(&[("", 8)]));
        let s = known(&Transform::Same, &blue, &green);
        let body = json!({ "points": [{ "id": 1, "vector": [0.0, 0.0, 0.0, 0.0] }] });
        let err = refusal(&s, body);
        assert!(
            err.contains("4 dimensions, but green's collection expects 8"),
            "{err}"
        );
    }

    #[test]
    fn named_keeps_each_sides_names_in_both_rest_forms() {
        let (blue, green) = (schema(&[("small", 2)]), schema(&[("large", 3)]));
        let s = known(&Transform::Named, &blue, &green);
        let batch = json!({ "batch": { "ids": [7], "vectors": { "small": [[1.0, 2.0]], "large": [[1.0, 2.0, 3.0]] }, "payloads": [{ "k": 1 }] } });
        let shaped = s
            .rest("upsert", batch.to_string().as_bytes())
            .unwrap()
            .unwrap();
        let blue: Value = serde_json::from_slice(&shaped.blue).unwrap();
        let green: Value = serde_json::from_slice(&shaped.green.unwrap()).unwrap();
        assert_eq!(
            blue["points"][0],
            json!({ "id": 7, "vector": { "small": [1.0, 2.0] }, "payload": { "k": 1 } })
        );
        assert_eq!(
            green["points"][0],
            json!({ "id": 7, "vector": { "large": [1.0, 2.0, 3.0] }, "payload": { "k": 1 } })
        );
        let only_blue = json!({ "points": [{ "id": 1, "vector": { "small": [1.0, 2.0] } }] });
        let err = refusal(&s, only_blue);
        assert!(err.contains("none of its vectors"), "{err}");
    }
}
