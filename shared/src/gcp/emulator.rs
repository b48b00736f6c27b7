//! Google's own emulators (installed with the Cloud SDK under
//! `/usr/lib/google-cloud-sdk/platform/`), started on a free loopback port
//! for tests and local runs. The wrapper scripts leave a java child behind,
//! so each emulator gets its own process group and the whole group is
//! killed on drop.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SDK_PLATFORM: &str = "/usr/lib/google-cloud-sdk/platform";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Firestore,
    PubSub,
}

impl Kind {
    fn command(self) -> PathBuf {
        let root =
            std::env::var_os("BIFROST_GCLOUD_PLATFORM").map_or_else(|| PathBuf::from(SDK_PLATFORM), PathBuf::from);
        match self {
            Kind::Firestore => root.join("cloud-firestore-emulator/cloud_firestore_emulator"),
            Kind::PubSub => root.join("pubsub-emulator/bin/cloud-pubsub-emulator"),
        }
    }

    /// The variable client libraries read the emulator's address from.
    pub fn env_var(self) -> &'static str {
        match self {
            Kind::Firestore => "FIRESTORE_EMULATOR_HOST",
            Kind::PubSub => "PUBSUB_EMULATOR_HOST",
        }
    }
}

/// A running emulator; killed (with its children) on drop.
pub struct Emulator {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub host: String,
    pub kind: Kind,
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Emulator {
    /// Starts the emulator and waits until it accepts connections (the JVM
    /// takes a few seconds).
    pub fn start(kind: Kind) -> Result<Emulator, String> {
        let cmd = kind.command();
        if !cmd.exists() {
            return Err(format!(
                "{} is not installed (expected at {}; set BIFROST_GCLOUD_PLATFORM to the Cloud SDK's platform/ directory)",
                kind.env_var(),
                cmd.display()
            ));
        }
        let port = free_port().map_err(|e| format!("finding a free port: {e}"))?;
        let mut command = Command::new(&cmd);
        match kind {
            Kind::Firestore => command.args(["start", "--host=127.0.0.1", &format!("--port={port}")]),
            Kind::PubSub => command.args(["--host=127.0.0.1", &format!("--port={port}")]),
        };
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", cmd.display()))?;
        let host = format!("127.0.0.1:{port}");
        let mut emulator = Emulator { child, host, kind };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if std::net::TcpStream::connect(&emulator.host).is_ok() {
                return Ok(emulator);
            }
            if let Ok(Some(status)) = emulator.child.try_wait() {
                return Err(format!("{} exited before listening ({status})", cmd.display()));
            }
            if Instant::now() > deadline {
                return Err(format!("{} did not listen on {} within 60 s", cmd.display(), emulator.host));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        // The wrapper's java child shares the group: kill the group.
        let pgid = self.child.id() as i32;
        let _ = Command::new("kill").args(["-KILL", "--", &format!("-{pgid}")]).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
