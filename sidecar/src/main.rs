//! `bifrost-sidecar`: runs next to one replica, probes it, reads its
//! process from /proc, and streams reports to the platform over gRPC.
//! Every flag can also be set as `BIFROST_SIDECAR_<FLAG>`.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use bifrost_sidecar::stream::{Config, Target, run};

const USAGE: &str = "\
bifrost-sidecar: health sidecar for one Bifrost replica

USAGE: bifrost-sidecar --target HOST:PORT --endpoint URL --deployment ID --token T [OPTIONS]

Every flag can also be set as an environment variable (shown in brackets).
  --target HOST:PORT     the app's address                        [BIFROST_SIDECAR_TARGET]
  --health-path PATH     HTTP path probed (default /)              [BIFROST_SIDECAR_HEALTH_PATH]
  --interval DURATION    time between reports (default 1s)        [BIFROST_SIDECAR_INTERVAL]
  --timeout DURATION     one probe's limit (default: interval, at most 2s) [BIFROST_SIDECAR_TIMEOUT]
  --pid PID              the app's process id                     [BIFROST_SIDECAR_PID]
  --pid-match TEXT       or: the newest process whose command line contains TEXT [BIFROST_SIDECAR_PID_MATCH]
  --endpoint URL         the platform's ingest, e.g. http://127.0.0.1:7071 [BIFROST_SIDECAR_ENDPOINT]
  --deployment ID        the deployment of this replica           [BIFROST_SIDECAR_DEPLOYMENT]
  --replica N            the replica's index (default 0)          [BIFROST_SIDECAR_REPLICA]
  --token T              the token the platform issued             [BIFROST_SIDECAR_TOKEN]
  --buffer N             reports kept while the platform is unreachable (default 300) [BIFROST_SIDECAR_BUFFER]
  -h, --help             this text
  -V, --version          the version
";

/// A flag's value: the command line first, then `BIFROST_SIDECAR_<FLAG>`.
fn value(args: &mut pico_args::Arguments, flag: &'static str) -> Result<Option<String>, String> {
    if let Some(v) = args.opt_value_from_str::<_, String>(flag).map_err(|e| e.to_string())? {
        return Ok(Some(v));
    }
    let env = format!("BIFROST_SIDECAR_{}", flag.trim_start_matches("--").replace('-', "_").to_ascii_uppercase());
    Ok(std::env::var(env).ok().filter(|v| !v.is_empty()))
}

fn required(args: &mut pico_args::Arguments, flag: &'static str) -> Result<String, String> {
    value(args, flag)?.ok_or_else(|| format!("{flag} is required"))
}

fn parsed<T: std::str::FromStr>(flag: &str, v: Option<String>) -> Result<Option<T>, String>
where
    T::Err: std::fmt::Display,
{
    v.map(|v| v.parse::<T>().map_err(|e| format!("{flag} {v:?}: {e}"))).transpose()
}

fn config() -> Result<Config, String> {
    let mut args = pico_args::Arguments::from_env();
    if args.contains(["-h", "--help"]) {
        print!("{USAGE}");
        std::process::exit(0);
    }
    if args.contains(["-V", "--version"]) {
        println!("bifrost-sidecar {}", env!("CARGO_PKG_VERSION"));
        std::process::exit(0);
    }
    let target: SocketAddr = parsed("--target", Some(required(&mut args, "--target")?))?.ok_or("--target")?;
    let health_path = value(&mut args, "--health-path")?.unwrap_or_else(|| "/".into());
    if !health_path.starts_with('/') {
        return Err(format!("--health-path {health_path:?} must start with /"));
    }
    let interval = value(&mut args, "--interval")?.map(|v| duration(&v)).transpose()?.unwrap_or(Duration::from_secs(1));
    let timeout = value(&mut args, "--timeout")?.map(|v| duration(&v)).transpose()?;
    let pid: Option<u32> = parsed("--pid", value(&mut args, "--pid")?)?;
    let pid_match = value(&mut args, "--pid-match")?;
    let endpoint = required(&mut args, "--endpoint")?;
    let deployment = required(&mut args, "--deployment")?;
    let replica: u32 = parsed("--replica", value(&mut args, "--replica")?)?.unwrap_or(0);
    let token = required(&mut args, "--token")?;
    let buffer: usize = parsed("--buffer", value(&mut args, "--buffer")?)?.unwrap_or(300);
    let rest = args.finish();
    if !rest.is_empty() {
        return Err(format!("unexpected argument {:?}", rest[0]));
    }
    let process = match (pid, pid_match) {
        (Some(_), Some(_)) => return Err("give --pid or --pid-match, not both".into()),
        (Some(p), None) => Target::Pid(p),
        (None, Some(m)) => Target::Match(m),
        (None, None) => Target::None,
    };
    Ok(Config {
        target,
        health_path,
        timeout: timeout.unwrap_or(interval.min(Duration::from_secs(2))),
        interval,
        process,
        endpoint,
        deployment,
        replica,
        token,
        buffer: buffer.max(1),
    })
}

/// `250ms`, `1s`, `2m`.
fn duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s.find(|c: char| !c.is_ascii_digit()).map(|i| s.split_at(i)).unwrap_or((s, "s"));
    let n: u64 = num.parse().map_err(|_| format!("{s:?} is not a duration like 500ms, 1s or 2m"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        _ => return Err(format!("{s:?}: unit must be ms, s or m")),
    };
    if d.is_zero() { Err("must be longer than 0".into()) } else { Ok(d) }
}

fn main() -> ExitCode {
    let config = match config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("bifrost-sidecar: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    // One thread: a report a second needs no more.
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bifrost-sidecar: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async {
        let shutdown = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut term) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = tokio::signal::ctrl_c() => {}
                    }
                }
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        };
        run(config, shutdown).await;
    });
    ExitCode::SUCCESS
}
