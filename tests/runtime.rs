//! The binary's async runtime, as `cutover_runtime_worker_threads` reports
//! it: a single-threaded one where cutover may use only one CPU (pinned with
//! taskset) or is given one worker, a worker per CPU by default, as many
//! as it is given otherwise; serving every way.

mod common;

use common::*;
use qdrant_client::Qdrant;

#[tokio::test]
async fn the_runtime_has_a_worker_per_cpu_it_may_use_or_as_many_as_it_is_given() {
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
    let runs: [(Option<usize>, &[&str], &str, usize); 4] = [
        (Some(0), &[], "current_thread", 1),
        (None, &[], many, cpus),
        (None, &["--worker-threads", "1"], "current_thread", 1),
        (Some(0), &["--worker-threads", "3"], "multi_thread", 3),
    ];
    for (cpu, options, flavor, threads) in runs {
        let served = spawn_serve(&config, cpu, options);
        let client = Qdrant::from_url(&format!("http://{}", served.grpc))
            .build()
            .unwrap();
        let listed = client.list_collections().await;
        assert!(listed.is_ok(), "pinned to {cpu:?}, {options:?}: {listed:?}");
        let gauge = format!("cutover_runtime_worker_threads{{flavor=\"{flavor}\"}} {threads}\n");
        assert_metrics_contain(&served.admin, &[&gauge]).await;
    }
}
