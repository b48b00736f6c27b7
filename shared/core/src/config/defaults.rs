//! Every default of deploy.toml, in one place. A key the user did not set
//! takes its value from here — and a default that depends on another key
//! follows what the user wrote there, so it never contradicts it.
//! `bifrost validate --explain` shows the result, and a test checks each
//! documented default (schema.rs) against these values.

use super::*;

/// Health probes time out after half the interval, at most 2 s: a user who
/// sets only `interval = "1s"` gets `timeout = "500ms"`, not an error
/// about a timeout they never wrote.
pub fn health_timeout(interval: Duration) -> Duration {
    Duration::from_millis((interval.millis / 2).clamp(1, 2_000))
}

/// The Dockerfile `runtime = "docker"` builds when `[build] dockerfile` is not set.
pub const DEFAULT_DOCKERFILE: &str = "Dockerfile";

impl Build {
    /// The Dockerfile a build uses: only Docker images have one.
    pub fn dockerfile_for(&self, runtime: Runtime) -> Option<&str> {
        (runtime == Runtime::Docker).then(|| self.dockerfile.as_deref().unwrap_or(DEFAULT_DOCKERFILE))
    }
}

/// `max_replicas` follows `min_replicas` up when only that is set.
pub fn max_replicas(min_replicas: u32) -> u32 {
    DEFAULT_MAX_REPLICAS.max(min_replicas)
}

impl Default for Run {
    fn default() -> Self {
        Run { command: None, port: 8080 }
    }
}

impl Default for Health {
    fn default() -> Self {
        Health {
            path: "/".into(),
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(2),
            success_threshold: 1,
            failure_threshold: 3,
        }
    }
}

impl Default for Resources {
    fn default() -> Self {
        Resources {
            cpu: Cpu { raw: "250m".into(), millicores: 250 },
            memory: Memory { raw: "256Mi".into(), bytes: 256 << 20 },
        }
    }
}

impl Default for Rollout {
    fn default() -> Self {
        Rollout {
            strategy: Strategy::Rolling,
            steps: vec![10, 50, 100],
            analysis_interval: Duration::from_secs(60),
            max_error_rate: 0.01,
            max_p99_ms: 500,
            min_requests: min_requests(),
            on_no_data: OnNoData::Pause,
            bake: bake(),
        }
    }
}

/// After going live, how long a failing deployment is rolled back by itself.
pub fn bake() -> Duration {
    Duration::from_secs(300)
}

/// Canary requests an analysis window needs before it is judged.
pub fn min_requests() -> u32 {
    50
}

pub const DEFAULT_MIN_REPLICAS: u32 = 1;
pub const DEFAULT_MAX_REPLICAS: u32 = 3;
pub const DEFAULT_CPU_TARGET: u32 = 70;
