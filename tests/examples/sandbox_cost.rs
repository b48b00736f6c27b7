//! Cost of the sandbox (bench/sandbox.sh runs it):
//!
//!   sandbox_cost [ROUNDS]
//!
//! Starts examples/hello-python ROUNDS times each way, alternating, and
//! times spawn → accepting connections on $PORT: directly (`sh -c "exec
//! python3 app.py"`, the sandbox's PATH, so the same python) and exactly as the
//! platform starts a replica (`bifrost sandbox run …`: supervisor, Landlock,
//! own uid when root, cgroup, allow-listed environment). Prints a table and
//! a JSON summary.

use std::path::Path;
use std::time::{Duration, Instant};

use bifrost_local::sandbox::{DEFAULT_UID_BASE, Jail, Limits, Sandbox, SandboxConfig, Supervised};

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn until_listening(port: u16) -> f64 {
    let start = Instant::now();
    loop {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return start.elapsed().as_secs_f64() * 1000.0;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "the app never listened");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("port")
}

#[tokio::main]
async fn main() {
    let rounds: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(30);
    let work = tempfile::tempdir().expect("tempdir");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(work.path(), std::fs::Permissions::from_mode(0o711)).expect("chmod");
    }
    let data = work.path().join("data");
    std::fs::create_dir_all(&data).expect("data");
    let sandbox = Sandbox::new(SandboxConfig {
        helper: bifrost_e2e::bifrost_bin(),
        owner: "bench-sandbox".into(),
        data_dir: data.clone(),
        apps_root: work.path().join("apps"),
        insecure: false,
        uid_base: DEFAULT_UID_BASE,
        open_files: bifrost_local::sandbox::DEFAULT_OPEN_FILES,
    })
    .expect("sandbox");
    let project = "p_bench";
    let dir = sandbox.deployment_dir(project, "d_bench");
    sandbox.own_dir(project, &dir).expect("app dir");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/hello-python");
    bifrost_e2e::copy_dir(&example, &dir);
    sandbox.hand_over(project, &dir).expect("chown");

    let (mut direct, mut boxed) = (vec![], vec![]);
    for _ in 0..rounds {
        // Directly, with the same PATH (the same python) and environment size.
        let port = free_port();
        let mut child = tokio::process::Command::new("sh")
            .args(["-c", "exec python3 app.py"])
            .current_dir(&dir)
            .env_clear()
            .env("PATH", sandbox.path())
            .env("HOME", dir.join(".bifrost/home"))
            .env("PORT", port.to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn");
        direct.push(until_listening(port).await);
        let _ = child.kill().await;

        // As the platform starts a replica.
        let port = free_port();
        let jail = Jail {
            name: "d_bench-r0".into(),
            project_id: project.into(),
            dir: dir.clone(),
            bind: vec![port],
            env: vec![("PORT".into(), port.to_string())],
            limits: Limits { memory_bytes: Some(64 << 20), cpu_millis: None, pids_max: Some(512) },
            command: vec!["sh".into(), "-c".into(), "exec python3 app.py".into()],
            ..Jail::default()
        };
        let mut cmd = sandbox.command(&jail).expect("command");
        cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
        let mut child = cmd.spawn().expect("spawn");
        let mut sup = Supervised::new(&child);
        boxed.push(until_listening(port).await);
        sup.kill();
        let _ = child.wait().await;
        sup.done();
    }
    direct.sort_by(f64::total_cmp);
    boxed.sort_by(f64::total_cmp);
    let row = |name: &str, v: &[f64]| {
        println!("{name:<10} p50 {:>7.1} ms   p99 {:>7.1} ms", percentile(v, 0.5), percentile(v, 0.99));
    };
    println!("replica start (spawn -> listening), hello-python, {rounds} rounds each, alternating");
    row("direct", &direct);
    row("sandboxed", &boxed);
    let (d50, b50) = (percentile(&direct, 0.5), percentile(&boxed, 0.5));
    println!("sandbox adds {:.1} ms at p50 ({:.2}x)", b50 - d50, b50 / d50);
    println!("isolation: {}", sandbox.isolation().summary);
    println!(
        "{}",
        serde_json::json!({"direct_p50_ms": d50, "direct_p99_ms": percentile(&direct, 0.99),
            "sandboxed_p50_ms": b50, "sandboxed_p99_ms": percentile(&boxed, 0.99)})
    );
}
