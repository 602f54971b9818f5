//! `cargo xtask services`: starts, on loopback, the servers that the connectors' tests run
//! against — NATS with JetStream, Redis, and PostgreSQL with prepared transactions enabled —
//! from the machine's own packages (Debian: `nats-server`, `redis-server`, `postgresql`). It is
//! idempotent: a server already answering on its port is left alone. Each one is waited for,
//! and one that does not come up fails the command with the end of its log.
//!
//! The servers keep their data and logs under `$RILL_SERVICES_DIR` (by default
//! `<temp dir>/rill-services`), outside the clone, so that every clone on the machine shares
//! one set. They listen on ports of their own (see [`NATS_PORT`], [`REDIS_PORT`],
//! [`POSTGRES_PORT`]) so as not to collide with a system-wide server; the tests find them there
//! unless `RILL_NATS_URL`, `RILL_REDIS_URL` or `RILL_POSTGRES_URL` say otherwise.
//!
//! PostgreSQL runs a cluster of its own, created with `initdb` (as the `postgres` user when this
//! runs as root, which PostgreSQL refuses to run as), trusting every connection from loopback
//! for the role `rill`: a server for tests, not for data anyone needs to protect.

use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// NATS's client port (its default is 4222).
pub const NATS_PORT: u16 = 14222;
/// Redis's port (its default is 6379).
pub const REDIS_PORT: u16 = 16379;
/// PostgreSQL's port (its default is 5432).
pub const POSTGRES_PORT: u16 = 15432;

/// How long a server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Starts every server that is not running yet.
pub fn start() -> anyhow::Result<()> {
    let dir = services_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    start_nats(&dir)?;
    start_redis(&dir)?;
    start_postgres(&dir)?;
    eprintln!(
        "services up: NATS nats://127.0.0.1:{NATS_PORT} (JetStream), Redis \
         redis://127.0.0.1:{REDIS_PORT}, PostgreSQL host=127.0.0.1 port={POSTGRES_PORT} \
         user=rill dbname=rill (data and logs in {})",
        dir.display()
    );
    Ok(())
}

/// Where the servers keep their data and logs.
fn services_dir() -> PathBuf {
    std::env::var_os("RILL_SERVICES_DIR")
        .map_or_else(|| std::env::temp_dir().join("rill-services"), PathBuf::from)
}

fn start_nats(dir: &Path) -> anyhow::Result<()> {
    if answers(NATS_PORT) {
        return Ok(());
    }
    let program = installed("nats-server", "nats-server")?;
    let store = dir.join("nats");
    let log = dir.join("nats.log");
    spawn_detached(
        Command::new(program)
            .args(["--addr", "127.0.0.1", "--port", &NATS_PORT.to_string()])
            .arg("--jetstream")
            .arg("--store_dir")
            .arg(&store)
            .arg("--log")
            .arg(&log),
    )?;
    wait_for("NATS", NATS_PORT, &log)
}

fn start_redis(dir: &Path) -> anyhow::Result<()> {
    if answers(REDIS_PORT) {
        return Ok(());
    }
    let program = installed("redis-server", "redis-server")?;
    let data = dir.join("redis");
    std::fs::create_dir_all(&data)?;
    let log = dir.join("redis.log");
    run_quietly(
        Command::new(program)
            .args(["--bind", "127.0.0.1", "--port", &REDIS_PORT.to_string()])
            .args(["--daemonize", "yes", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&data)
            .arg("--logfile")
            .arg(&log),
        "redis-server",
    )?;
    wait_for("Redis", REDIS_PORT, &log)
}

fn start_postgres(dir: &Path) -> anyhow::Result<()> {
    let bin = postgres_bin_dir()?;
    if !answers(POSTGRES_PORT) {
        start_postgres_server(dir, &bin)?;
    }
    create_database(&bin)
}

/// Starts the cluster in `dir` (creating it first if needed).
fn start_postgres_server(dir: &Path, bin: &Path) -> anyhow::Result<()> {
    let data = dir.join("postgres");
    let log = dir.join("postgres.log");
    let as_root = is_root();
    if !data.join("PG_VERSION").exists() {
        std::fs::create_dir_all(&data)?;
        if as_root {
            give_to_postgres(&data)?;
        }
        run_quietly(
            as_postgres(as_root, &bin.join("initdb"))
                .arg("--pgdata")
                .arg(&data)
                .args(["--username", "rill", "--auth", "trust", "--no-sync"])
                .args(["--encoding", "UTF8", "--locale", "C"]),
            "initdb",
        )?;
    }
    if as_root {
        // The log file, too, is written by the server.
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        give_to_postgres(&log)?;
    }
    let options = format!(
        "-c listen_addresses=127.0.0.1 -c port={POSTGRES_PORT} -c unix_socket_directories={} \
         -c max_prepared_transactions=64 -c max_connections=200",
        data.display()
    );
    run_quietly(
        as_postgres(as_root, &bin.join("pg_ctl"))
            .arg("--pgdata")
            .arg(&data)
            .arg("--log")
            .arg(&log)
            .args(["--options", &options, "--wait", "start"]),
        "pg_ctl start",
    )?;
    wait_for("PostgreSQL", POSTGRES_PORT, &log)
}

/// Creates the database `rill`, unless it exists: also when an earlier run started the server
/// but failed before creating it.
fn create_database(bin: &Path) -> anyhow::Result<()> {
    let exists = Command::new(bin.join("psql"))
        .args(["--host", "127.0.0.1", "--port", &POSTGRES_PORT.to_string()])
        .args([
            "--username",
            "rill",
            "--dbname",
            "postgres",
            "--tuples-only",
        ])
        .args([
            "--command",
            "SELECT 1 FROM pg_database WHERE datname = 'rill'",
        ])
        .output()
        .context("cannot run psql")?;
    if !String::from_utf8_lossy(&exists.stdout).contains('1') {
        run_quietly(
            Command::new(bin.join("createdb"))
                .args(["--host", "127.0.0.1", "--port", &POSTGRES_PORT.to_string()])
                .args(["--username", "rill", "rill"]),
            "createdb",
        )?;
    }
    Ok(())
}

/// Makes `path` (the cluster's directory, or its log) the `postgres` user's: PostgreSQL
/// refuses to run as root, so what it writes belongs to that user.
fn give_to_postgres(path: &Path) -> anyhow::Result<()> {
    let mut chown = Command::new("chown");
    chown.arg("-R").arg("postgres:postgres").arg(path);
    run_quietly(&mut chown, "chown")
}

/// The newest installed PostgreSQL's programs (Debian keeps them out of `PATH`).
fn postgres_bin_dir() -> anyhow::Result<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    match versions.pop() {
        Some((_, bin)) => Ok(bin),
        None => bail!(
            "PostgreSQL's server is not installed (no /usr/lib/postgresql/*/bin/initdb): \
             apt-get install -y postgresql"
        ),
    }
}

/// `program` run as the `postgres` user when this runs as root.
fn as_postgres(as_root: bool, program: &Path) -> Command {
    if !as_root {
        return Command::new(program);
    }
    let mut command = Command::new("runuser");
    command.args(["-u", "postgres", "--"]).arg(program);
    command
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| output.stdout.trim_ascii() == b"0")
}

/// `program`, found on `PATH`, or an error saying which package provides it.
fn installed(program: &str, package: &str) -> anyhow::Result<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(program))
            .find(|candidate| candidate.is_file())
    });
    found.with_context(|| format!("{program} is not installed: apt-get install -y {package}"))
}

/// Whether something accepts connections on loopback port `port`.
fn answers(port: u16) -> bool {
    let address = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
    TcpStream::connect_timeout(&address.into(), Duration::from_millis(200)).is_ok()
}

/// Waits until `name` accepts connections on `port`, or fails with the end of its log.
fn wait_for(name: &str, port: u16, log: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    while started.elapsed() < START_TIMEOUT {
        if answers(port) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let tail: Vec<&str> = text.lines().rev().take(20).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    bail!(
        "{name} did not come up on 127.0.0.1:{port} within {}s; the end of {}:\n{}",
        START_TIMEOUT.as_secs(),
        log.display(),
        tail.join("\n")
    )
}

/// Starts a server that stays in the foreground, detached from this process's output.
fn spawn_detached(command: &mut Command) -> anyhow::Result<()> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {:?}", command.get_program()))?;
    Ok(())
}

/// Runs a command to its end, failing with what it printed if it fails.
fn run_quietly(command: &mut Command, what: &str) -> anyhow::Result<()> {
    let output = command
        .output()
        .with_context(|| format!("cannot run {what}"))?;
    if !output.status.success() {
        bail!(
            "{what} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}
