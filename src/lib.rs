//! cutover: a Qdrant-protocol proxy for migrating collections without downtime.
#![forbid(unsafe_code)]

pub mod admin;
pub mod background;
pub mod config;
pub mod embedded;
pub mod embedder;
pub mod grpc;
pub mod h1_pool;
pub mod h2_channel;
pub mod h2_server;
pub mod metrics;
pub mod proxy;
pub mod ranking;
pub mod read_answer;
pub mod read_request;
pub mod reads;
pub mod replay_log;
pub mod replayer;
pub mod rest;
pub mod routing;
pub mod serve;
pub mod server;
pub mod shadow;
pub mod split;
pub mod transform;
pub mod upstream;
pub mod vector_sizes;
pub mod whole;
pub mod write;
