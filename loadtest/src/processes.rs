//! The processes under test, each in its own process as in production:
//! an embedded Qdrant upstream and cutover in front of it. Optionally
//! pinned to one CPU; killed when dropped, so a run always stops its servers.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, bail};

pub struct Server {
    child: Child,
    /// Addresses the server printed on its first stdout line, by label.
    pub addresses: Vec<(String, String)>,
}

impl Server {
    /// Starts `bin args`, pinned to `cpu` if given, and reads its address line.
    pub fn start(bin: &Path, args: &[&str], cpu: Option<usize>) -> anyhow::Result<Server> {
        let mut child = command(bin.as_os_str(), cpu)
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped"))
            .read_line(&mut line)
            .context("reading the server's address line")?;
        if line.is_empty() {
            bail!("{} exited before listening", bin.display());
        }
        // "label: KIND addr KIND addr ...": pairs after the colon.
        let words: Vec<&str> = line
            .split_once(':')
            .map_or("", |(_, rest)| rest)
            .split_whitespace()
            .collect();
        let addresses = words
            .chunks(2)
            .filter(|pair| pair.len() == 2)
            .map(|pair| (pair[0].to_owned(), pair[1].to_owned()))
            .collect();
        Ok(Server { child, addresses })
    }

    pub fn address(&self, label: &str) -> anyhow::Result<String> {
        let (_, address) = self
            .addresses
            .iter()
            .find(|(l, _)| l == label)
            .with_context(|| format!("no {label} address in {:?}", self.addresses))?;
        Ok(if address.starts_with("http") {
            address.clone()
        } else {
            format!("http://{address}")
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A command for `program`, run pinned to `cpu` (through taskset) if given.
pub fn command(program: &std::ffi::OsStr, cpu: Option<usize>) -> Command {
    match cpu {
        Some(cpu) => {
            let mut pinned = Command::new("taskset");
            pinned.args(["-c", &cpu.to_string()]).arg(program);
            pinned
        }
        None => Command::new(program),
    }
}

/// Pins this process to `cpu`, so its wake-ups stay on the servers' CPU.
pub fn pin_self(cpu: usize) -> anyhow::Result<()> {
    let status = Command::new("taskset")
        .args(["-cp", &cpu.to_string(), &std::process::id().to_string()])
        .stdout(Stdio::null())
        .status()
        .context("running taskset")?;
    if !status.success() {
        bail!("taskset could not pin the load generator to CPU {cpu}");
    }
    Ok(())
}

/// cutover's config for a passthrough run: one upstream, no routes.
pub fn passthrough_config(
    dir: &Path,
    upstream_rest: &str,
    upstream_grpc: &str,
) -> anyhow::Result<PathBuf> {
    let path = dir.join("cutover.toml");
    let text = format!(
        r#"state_file = "{state}"
default_upstream = "upstream"

[listen]
rest = "127.0.0.1:0"
grpc = "127.0.0.1:0"
admin = "127.0.0.1:0"
allow_unauthenticated_admin = true

[upstreams.upstream]
rest = "{upstream_rest}"
grpc = "{upstream_grpc}"
"#,
        state = dir.join("state.json").display()
    );
    std::fs::write(&path, text)?;
    Ok(path)
}
