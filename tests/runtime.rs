//! The binary's async runtime, as `cutover_runtime_worker_threads` reports
//! it: a single-threaded one where cutover may use only one CPU (pinned with
//! taskset), a worker per CPU otherwise; serving either way.

mod common;

use common::*;
use qdrant_client::Qdrant;

#[tokio::test]
async fn one_cpu_gets_one_runtime_thread_and_more_get_one_each() {
    let blue = start_upstream().await;
    let green = start_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cutover.toml");
    let text = proxy_config(&blue.upstream, &green.upstream, dir.path(), "");
    std::fs::write(&config, text).unwrap();
    let cpus = std::thread::available_parallelism().unwrap().get();
    let many = if cpus == 1 {
        "current_thread"
    } else {
        "multi_thread"
    };
    for (cpu, flavor, threads) in [(Some(0), "current_thread", 1), (None, many, cpus)] {
        let served = spawn_serve(&config, cpu);
        let client = Qdrant::from_url(&format!("http://{}", served.grpc))
            .build()
            .unwrap();
        let listed = client.list_collections().await;
        assert!(listed.is_ok(), "pinned to {cpu:?}: {listed:?}");
        let gauge = format!("cutover_runtime_worker_threads{{flavor=\"{flavor}\"}} {threads}\n");
        assert_metrics_contain(&served.admin, &[&gauge]).await;
    }
}
