//! A read's answer, decoded: the ranked point IDs (group IDs for a groups
//! read) a shadow read compares, and the fusion of two sides' answers into
//! one answer in Qdrant's shape, each point scored by RRF.
//!
//! On gRPC every read of one shape has the same wire layout (`result = 1`,
//! `time = 2`, `usage = 3`): a Query, Recommend or Discover answer decodes as
//! a `SearchResponse`, a batch as a `SearchBatchResponse`, groups as a
//! `SearchGroupsResponse`. On REST a Query's points sit under
//! `result.points`; the others' under `result`.

use bytes::Bytes;
use prost::Message;
use qdrant_client::qdrant as pb;
use serde_json::Value;

use crate::ranking::Rrf;
use crate::read_request::{Family, ReadKind, Shape, Window, grpc_frame};
use crate::routing::Side;
use crate::upstream::Protocol;

/// Ranked IDs: one list per request (one for a single read, one per batch
/// entry), IDs written as Qdrant prints them (`42`, a UUID, a group value).
pub type Ranked = Vec<Vec<String>>;

pub fn ranked(protocol: Protocol, kind: ReadKind, body: &[u8]) -> Result<Ranked, String> {
    match protocol {
        Protocol::Grpc => {
            let message = message(body)?;
            let ids = |points: &[pb::ScoredPoint]| points.iter().map(point_id).collect();
            Ok(match kind.shape {
                Shape::One => vec![ids(&decode::<pb::SearchResponse>(message)?.result)],
                Shape::Batch => decode::<pb::SearchBatchResponse>(message)?
                    .result
                    .iter()
                    .map(|batch| ids(&batch.result))
                    .collect(),
                Shape::Groups => vec![
                    decode::<pb::SearchGroupsResponse>(message)?
                        .result
                        .unwrap_or_default()
                        .groups
                        .iter()
                        .map(|g| group_id(g.id.as_ref()))
                        .collect(),
                ],
            })
        }
        Protocol::Rest => {
            let mut json: Value =
                serde_json::from_slice(body).map_err(|e| format!("the answer is not JSON: {e}"))?;
            Ok(rest_lists(kind, &mut json)?
                .into_iter()
                .map(|list| list.iter().map(|item| json_id(&item["id"])).collect())
                .collect())
        }
    }
}

/// Fuses the primary's and the secondary's answers (both successes) into
/// one, in the primary's envelope: per request, the RRF of the two lists,
/// cut to the window the client asked for, each point's score its RRF
/// score. With no secondary, the primary's lists are fused with nothing.
pub fn fuse(
    protocol: Protocol,
    kind: ReadKind,
    primary: &[u8],
    secondary: Option<&[u8]>,
    windows: &[Window],
    rrf: &Rrf,
    primary_side: Side,
) -> Result<Bytes, String> {
    let window = |i: usize| {
        windows.get(i).copied().unwrap_or(Window {
            offset: 0,
            limit: 0,
        })
    };
    // A groups read has no offset.
    let page = |i: usize| {
        let w = window(i);
        let offset = if kind.shape == Shape::Groups {
            0
        } else {
            w.offset
        };
        (offset, w.limit)
    };
    match protocol {
        Protocol::Grpc => {
            let first = message(primary)?;
            let second = secondary.map(message).transpose()?;
            let scored = |fused: Vec<(pb::ScoredPoint, f64)>| {
                fused
                    .into_iter()
                    .map(|(point, score)| pb::ScoredPoint {
                        score: score as f32,
                        ..point
                    })
                    .collect::<Vec<_>>()
            };
            Ok(match kind.shape {
                Shape::One => {
                    let mut answer = decode::<pb::SearchResponse>(first)?;
                    let other = second.map(decode::<pb::SearchResponse>).transpose()?;
                    let mine = std::mem::take(&mut answer.result);
                    let theirs = other.map(|o| o.result).unwrap_or_default();
                    answer.result = {
                        let (offset, limit) = page(0);
                        scored(rrf.fuse(primary_side, mine, theirs, point_id, offset, limit))
                    };
                    grpc_frame(&answer)
                }
                Shape::Batch => {
                    let mut answer = decode::<pb::SearchBatchResponse>(first)?;
                    let other = second.map(decode::<pb::SearchBatchResponse>).transpose()?;
                    let mut theirs: Vec<Vec<pb::ScoredPoint>> = match other {
                        Some(other) => other.result.into_iter().map(|b| b.result).collect(),
                        None => vec![Vec::new(); answer.result.len()],
                    };
                    if theirs.len() != answer.result.len() {
                        return Err("the sides answered batches of different lengths".into());
                    }
                    for (i, mine) in answer.result.iter_mut().enumerate() {
                        let items = std::mem::take(&mut mine.result);
                        let (offset, limit) = page(i);
                        let other = std::mem::take(&mut theirs[i]);
                        mine.result =
                            scored(rrf.fuse(primary_side, items, other, point_id, offset, limit));
                    }
                    grpc_frame(&answer)
                }
                Shape::Groups => {
                    let mut answer = decode::<pb::SearchGroupsResponse>(first)?;
                    let other = second.map(decode::<pb::SearchGroupsResponse>).transpose()?;
                    let theirs = other.and_then(|o| o.result).unwrap_or_default().groups;
                    let mine = answer.result.get_or_insert_default();
                    let groups = std::mem::take(&mut mine.groups);
                    let (_, limit) = page(0);
                    let key = |g: &pb::PointGroup| group_id(g.id.as_ref());
                    mine.groups = rrf
                        .fuse(primary_side, groups, theirs, key, 0, limit)
                        .into_iter()
                        .map(|(group, _)| group)
                        .collect();
                    grpc_frame(&answer)
                }
            })
        }
        Protocol::Rest => {
            let parse = |body: &[u8]| -> Result<Value, String> {
                serde_json::from_slice(body).map_err(|e| format!("the answer is not JSON: {e}"))
            };
            let mut answer = parse(primary)?;
            let mut other = secondary.map(parse).transpose()?;
            let theirs: Option<Vec<Vec<Value>>> = match &mut other {
                Some(other) => Some(
                    rest_lists(kind, other)?
                        .into_iter()
                        .map(std::mem::take)
                        .collect(),
                ),
                None => None,
            };
            let mine = rest_lists(kind, &mut answer)?;
            let mut theirs = theirs.unwrap_or_else(|| vec![Vec::new(); mine.len()]);
            if mine.len() != theirs.len() {
                return Err("the sides answered batches of different lengths".into());
            }
            for (i, list) in mine.into_iter().enumerate() {
                let items = std::mem::take(list);
                let (offset, limit) = page(i);
                let other = std::mem::take(&mut theirs[i]);
                *list = rrf
                    .fuse(
                        primary_side,
                        items,
                        other,
                        |item| json_id(&item["id"]),
                        offset,
                        limit,
                    )
                    .into_iter()
                    .map(|(mut item, score)| {
                        if kind.shape != Shape::Groups {
                            item["score"] = Value::from(score);
                        }
                        item
                    })
                    .collect();
            }
            Ok(Bytes::from(
                serde_json::to_vec(&answer).expect("JSON values serialize"),
            ))
        }
    }
}

fn message(body: &[u8]) -> Result<&[u8], String> {
    crate::grpc::message(body)
        .ok_or_else(|| "the answer is not one uncompressed gRPC message".into())
}

fn decode<M: Message + Default>(message: &[u8]) -> Result<M, String> {
    M::decode(message).map_err(|e| format!("the answer is not a valid message: {e}"))
}

fn point_id(point: &pb::ScoredPoint) -> String {
    use pb::point_id::PointIdOptions;
    match point
        .id
        .as_ref()
        .and_then(|id| id.point_id_options.as_ref())
    {
        Some(PointIdOptions::Num(n)) => n.to_string(),
        Some(PointIdOptions::Uuid(u)) => u.clone(),
        None => String::new(),
    }
}

fn group_id(id: Option<&pb::GroupId>) -> String {
    use pb::group_id::Kind;
    match id.and_then(|id| id.kind.as_ref()) {
        Some(Kind::UnsignedValue(n)) => n.to_string(),
        Some(Kind::IntegerValue(n)) => n.to_string(),
        Some(Kind::StringValue(s)) => s.clone(),
        None => String::new(),
    }
}

fn json_id(id: &Value) -> String {
    match id {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn points_list(v: &mut Value, query: bool) -> Option<&mut Vec<Value>> {
    let v = if query { v.get_mut("points")? } else { v };
    v.as_array_mut()
}

/// The ranked lists inside a REST answer, in request order.
fn rest_lists(kind: ReadKind, answer: &mut Value) -> Result<Vec<&mut Vec<Value>>, String> {
    let missing = || format!("the answer has no result list for a {kind:?} read");
    let result = answer.get_mut("result").ok_or_else(missing)?;
    let query = kind.family == Family::Query;
    match kind.shape {
        Shape::One => Ok(vec![points_list(result, query).ok_or_else(missing)?]),
        Shape::Batch => result
            .as_array_mut()
            .ok_or_else(missing)?
            .iter_mut()
            .map(|entry| points_list(entry, query).ok_or_else(missing))
            .collect(),
        Shape::Groups => Ok(vec![
            result
                .get_mut("groups")
                .and_then(Value::as_array_mut)
                .ok_or_else(missing)?,
        ]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn scored(id: u64, score: f32) -> pb::ScoredPoint {
        pb::ScoredPoint {
            id: Some(id.into()),
            score,
            ..Default::default()
        }
    }

    #[test]
    fn grpc_answers_fuse_in_their_own_shape() {
        let kind = ReadKind::of("Query").unwrap();
        let answer = |ids: &[u64]| {
            grpc_frame(&pb::QueryResponse {
                result: ids.iter().map(|id| scored(*id, 0.5)).collect(),
                time: 0.001,
                usage: None,
            })
        };
        let (blue, green) = (answer(&[1, 2, 3, 4]), answer(&[3, 1, 5]));
        assert_eq!(
            ranked(Protocol::Grpc, kind, &blue).unwrap(),
            [["1", "2", "3", "4"]]
        );
        let window = [Window {
            offset: 0,
            limit: 3,
        }];
        let fused = fuse(
            Protocol::Grpc,
            kind,
            &blue,
            Some(&green),
            &window,
            &Rrf::default(),
            Side::Blue,
        )
        .unwrap();
        let fused = pb::QueryResponse::decode(&fused[5..]).unwrap();
        let got: Vec<(String, f32)> = fused
            .result
            .iter()
            .map(|p| (point_id(p), p.score))
            .collect();
        let want = [
            ("1", 1.0 / 61.0 + 1.0 / 62.0),
            ("3", 1.0 / 63.0 + 1.0 / 61.0),
            ("2", 1.0 / 62.0),
        ];
        for ((id, score), (want_id, want_score)) in got.iter().zip(want) {
            assert_eq!(id, want_id);
            assert!((f64::from(*score) - want_score).abs() < 1e-6);
        }
        assert_eq!(got.len(), 3);
    }

    #[test]
    fn rest_batches_fuse_per_request() {
        let kind = ReadKind::of("search_batch").unwrap();
        let entry = |ids: &[u64]| -> Value {
            ids.iter()
                .map(|id| json!({ "id": id, "score": 0.1, "payload": { "from": "side" } }))
                .collect()
        };
        let blue = json!({ "result": [entry(&[1, 2]), entry(&[7])], "status": "ok", "time": 0.1 });
        let green = json!({ "result": [entry(&[2, 3]), entry(&[])], "status": "ok", "time": 0.2 });
        let windows = [
            Window {
                offset: 1,
                limit: 2,
            },
            Window {
                offset: 0,
                limit: 5,
            },
        ];
        let fused = fuse(
            Protocol::Rest,
            kind,
            blue.to_string().as_bytes(),
            Some(green.to_string().as_bytes()),
            &windows,
            &Rrf::default(),
            Side::Blue,
        )
        .unwrap();
        let fused: Value = serde_json::from_slice(&fused).unwrap();
        // Request 1: 2 = 1/62 + 1/61 first, then 1 = 1/61, then 3 = 1/62; offset 1 skips 2.
        let ids: Vec<&Value> = fused["result"][0]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| &p["id"])
            .collect();
        assert_eq!(ids, [&json!(1), &json!(3)]);
        assert_eq!(fused["result"][0][0]["score"], json!(1.0 / 61.0));
        assert_eq!(fused["result"][1][0]["id"], json!(7));
        assert_eq!(fused["time"], json!(0.1), "the primary's envelope");
        let query = ReadKind::of("query").unwrap();
        let answer = json!({ "result": { "points": [{ "id": "a-uuid", "score": 1.0 }] } });
        assert_eq!(
            ranked(Protocol::Rest, query, answer.to_string().as_bytes()).unwrap(),
            [["a-uuid"]]
        );
    }
}
