//! cutover: a Qdrant-protocol proxy for migrating collections without downtime.
#![forbid(unsafe_code)]

pub mod embedded;
