//! SIGHUP reloads the config file, through the same path as `POST /reload`.
//! In a test binary of its own: the signal goes to the whole process.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_config() {
    let blue = start_upstream().await;
    let green = start_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let config = proxy_config(&blue.upstream, &green.upstream, dir.path(), DOCS_ROUTE);
    let proxy = start_proxy(&config, dir.path()).await;
    let routes = || async {
        reqwest::Client::new()
            .get(format!("{}/routes", proxy.admin_url()))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };
    assert_eq!(routes().await["routes"].as_array().unwrap().len(), 1);

    let more = DOCS_ROUTE
        .replace("\"docs\"", "\"more\"")
        .replace("docs_v2", "more_v2");
    std::fs::write(&proxy.config_path, config + &more).unwrap();
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut reloaded = Value::Null;
    for _ in 0..100 {
        reloaded = routes().await;
        if reloaded["routes"].as_array().unwrap().len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        reloaded["routes"].as_array().unwrap().len(),
        2,
        "{reloaded}"
    );
    assert_eq!(reloaded["version"], 2);
    proxy.running.stop().await;
    blue.upstream.stop().await;
    green.upstream.stop().await;
}
