//! Routing scripts pushed live (`bifrost scripts push`), kept as versions
//! per app in a blob store: the data dir embedded, the scripts bucket on
//! GCP. Objects:
//!
//! - `<app>/v<N>.lua` — version N's text, never rewritten;
//! - `<app>/manifest.json` — the versions (who, when, sha256) and which
//!   one runs (`null`: the deployment's own `[traffic] script`);
//! - `index.json` — app → running version and its sha256: the one object a
//!   router polls (by generation) to learn of a push.
//!
//! Whether a script compiles and survives its dry run is the caller's
//! check (the gateway, with the Lua sandbox); this keeps what passed.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::domain::{Actor, Timestamp, now};
use crate::error::{StoreError, StoreResult};

/// Where script objects live. Several processes may write at once (gateway
/// instances on Cloud Run), so every write is conditional: it lands only on
/// the generation its writer read, as Cloud Storage's `ifGenerationMatch`.
#[async_trait]
pub trait Blobs: Send + Sync {
    /// The object and its generation (> 0); `None` if it does not exist.
    async fn get(&self, key: &str) -> Result<Option<(Vec<u8>, i64)>, String>;
    /// Writes the object whole if its generation is still `expected` (`0`:
    /// if it does not exist): `Ok(Some(new generation))`, or `Ok(None)` when
    /// another writer changed it first (then nothing is written). A new
    /// generation is never one the object had before.
    async fn put_if(&self, key: &str, bytes: Vec<u8>, expected: i64) -> Result<Option<i64>, String>;
}

/// Read-modify-write rounds before a change gives up on writers that keep
/// getting there first.
const ATTEMPTS: u32 = 20;

/// One pushed version of an app's script.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScriptVersion {
    pub version: u32,
    pub sha256: String,
    pub bytes: usize,
    pub pushed_by: Actor,
    pub at: Timestamp,
}

/// An app's versions and which one runs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub versions: Vec<ScriptVersion>,
    /// `None`: no pushed version runs (the deployment's own script, if any).
    pub active: Option<u32>,
    /// Who last changed `active`, and when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed_by: Option<Actor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed_at: Option<Timestamp>,
}

/// What runs for an app, as routers need it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Running {
    pub version: u32,
    pub sha256: String,
}

/// How a script fares in the router(s) that run it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScriptHealth {
    pub errors: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<Timestamp>,
}

/// Largest script accepted (bytes).
pub const MAX_SCRIPT_BYTES: usize = 256 * 1024;

/// What one router report may tell of scripts' failures: apps, and
/// scripts of one app.
pub const MAX_REPORTED_APPS: usize = 64;
pub const MAX_REPORTED_SCRIPTS: usize = 16;

const INDEX: &str = "index.json";

/// The scripts of every app over one [`Blobs`].
pub struct Scripts {
    blobs: Arc<dyn Blobs>,
    /// One writer at a time in this process (manifest then index).
    write: tokio::sync::Mutex<()>,
    /// Errors reported by this process's router, by (app, sha256).
    health: Mutex<HashMap<(String, String), ScriptHealth>>,
    /// Sources read, by sha256 (they never change).
    sources: Mutex<HashMap<String, Arc<str>>>,
}

impl std::fmt::Debug for Scripts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scripts").finish_non_exhaustive()
    }
}

fn backend(e: String) -> StoreError {
    StoreError::Backend(e)
}

fn manifest_key(app: &str) -> String {
    format!("{app}/manifest.json")
}

fn source_key(app: &str, version: u32) -> String {
    format!("{app}/v{version}.lua")
}

/// The router processes' reports of the app's script failures.
fn errors_key(app: &str) -> String {
    format!("{app}/errors.json")
}

/// sha256 → router process (`node@started_ms`) → its cumulative failures.
type RouterErrors = BTreeMap<String, BTreeMap<String, ScriptHealth>>;

/// Router processes whose reports are kept per script: the ones heard from
/// last (a restarted router is a new process).
const ROUTERS_KEPT: usize = 64;

/// Adds `h` to `into`: counts sum, the newest error stays.
fn merge(into: &mut ScriptHealth, h: &ScriptHealth) {
    into.errors += h.errors;
    if h.at > into.at {
        into.last_error.clone_from(&h.last_error);
        into.line = h.line;
        into.at = h.at;
    }
}

impl Scripts {
    pub fn new(blobs: Arc<dyn Blobs>) -> Scripts {
        Scripts {
            blobs,
            write: tokio::sync::Mutex::new(()),
            health: Mutex::new(HashMap::new()),
            sources: Mutex::new(HashMap::new()),
        }
    }

    async fn read_json<T: Default + for<'de> Deserialize<'de>>(&self, key: &str) -> StoreResult<(T, i64)> {
        match self.blobs.get(key).await.map_err(backend)? {
            None => Ok((T::default(), 0)),
            Some((bytes, generation)) => serde_json::from_slice(&bytes)
                .map(|t| (t, generation))
                .map_err(|e| StoreError::Backend(format!("{key} is not valid: {e}"))),
        }
    }

    /// Writes `value` if `key` is still at `generation`; `false`: it moved.
    async fn write_json_if(&self, key: &str, value: &impl Serialize, generation: i64) -> StoreResult<bool> {
        let bytes = serde_json::to_vec_pretty(value).map_err(|e| StoreError::Backend(e.to_string()))?;
        Ok(self.blobs.put_if(key, bytes, generation).await.map_err(backend)?.is_some())
    }

    /// Changes the app's manifest with `change` until the write lands on the
    /// manifest it read (another writer may change it in between).
    async fn update_manifest(
        &self,
        app: &str,
        mut change: impl FnMut(&mut Manifest) -> StoreResult<()>,
    ) -> StoreResult<Manifest> {
        for _ in 0..ATTEMPTS {
            let (mut manifest, generation) = self.read_json::<Manifest>(&manifest_key(app)).await?;
            change(&mut manifest)?;
            if self.write_json_if(&manifest_key(app), &manifest, generation).await? {
                self.publish(app).await?;
                return Ok(manifest);
            }
        }
        Err(busy(app))
    }

    /// Claims the first free version number from `from` by creating its
    /// object (a create fails if another writer made it first).
    async fn claim(&self, app: &str, from: u32, source: &str) -> StoreResult<u32> {
        for version in from..from.saturating_add(ATTEMPTS) {
            let created = self.blobs.put_if(&source_key(app, version), source.as_bytes().to_vec(), 0).await;
            if created.map_err(backend)?.is_some() {
                return Ok(version);
            }
        }
        Err(busy(app))
    }

    /// The app's versions, newest last, and which one runs.
    pub async fn manifest(&self, app: &str) -> StoreResult<Manifest> {
        Ok(self.read_json::<Manifest>(&manifest_key(app)).await?.0)
    }

    /// Keeps `source` (already checked) as the app's next version and
    /// makes it the running one.
    pub async fn push(&self, app: &str, source: &str, actor: Actor) -> StoreResult<ScriptVersion> {
        if source.len() > MAX_SCRIPT_BYTES {
            return Err(StoreError::Invalid(format!(
                "the script is {} bytes; the limit is {MAX_SCRIPT_BYTES}",
                source.len()
            )));
        }
        let _one = self.write.lock().await;
        let (sha256, at) = (sha256_hex(source), now());
        let mut claimed: Option<u32> = None;
        for _ in 0..ATTEMPTS {
            let (mut manifest, generation) = self.read_json::<Manifest>(&manifest_key(app)).await?;
            // Our own write, landed though its answer was lost (then retried).
            if let Some(ours) =
                manifest.versions.iter().find(|x| Some(x.version) == claimed && x.sha256 == sha256 && x.at == at)
            {
                let ours = ours.clone();
                self.publish(app).await?;
                return Ok(ours);
            }
            let next = manifest.versions.last().map_or(1, |v| v.version + 1);
            // A number claimed in an earlier round stays ours while the
            // manifest has not gone past it.
            let version = match claimed {
                Some(c) if c >= next => c,
                _ => self.claim(app, next, source).await?,
            };
            claimed = Some(version);
            let v =
                ScriptVersion { version, sha256: sha256.clone(), bytes: source.len(), pushed_by: actor.clone(), at };
            manifest.versions.push(v.clone());
            manifest.active = Some(version);
            manifest.changed_by = Some(actor.clone());
            manifest.changed_at = Some(at);
            if self.write_json_if(&manifest_key(app), &manifest, generation).await? {
                self.publish(app).await?;
                return Ok(v);
            }
        }
        Err(busy(app))
    }

    /// Makes `version` the running one (`None`: back to the deployment's
    /// own script). Refuses a version that does not exist.
    pub async fn activate(&self, app: &str, version: Option<u32>, actor: Actor) -> StoreResult<Manifest> {
        let _one = self.write.lock().await;
        let at = now();
        self.update_manifest(app, |manifest| {
            if let Some(v) = version
                && !manifest.versions.iter().any(|x| x.version == v)
            {
                return Err(StoreError::not_found("script version", format!("{app} v{v}")));
            }
            manifest.active = version;
            manifest.changed_by = Some(actor.clone());
            manifest.changed_at = Some(at);
            Ok(())
        })
        .await
    }

    /// Sets the app's entry of the index routers poll from its manifest as
    /// it is now. The manifest is read after the index and the write lands
    /// only on the index read, so the last write always carries the newest
    /// manifest, whatever order concurrent writers finish in.
    async fn publish(&self, app: &str) -> StoreResult<()> {
        for _ in 0..ATTEMPTS {
            let (mut index, generation) = self.read_json::<BTreeMap<String, Running>>(INDEX).await?;
            let manifest = self.manifest(app).await?;
            let running = manifest
                .active
                .and_then(|a| manifest.versions.iter().find(|v| v.version == a))
                .map(|v| Running { version: v.version, sha256: v.sha256.clone() });
            if index.get(app) == running.as_ref() && generation != 0 {
                return Ok(());
            }
            match running {
                Some(r) => index.insert(app.to_string(), r),
                None => index.remove(app),
            };
            if self.write_json_if(INDEX, &index, generation).await? {
                return Ok(());
            }
        }
        Err(busy(app))
    }

    /// The index's generation: a router reads [`Scripts::running`] again
    /// only when it moved.
    pub async fn generation(&self) -> StoreResult<i64> {
        Ok(self.blobs.get(INDEX).await.map_err(backend)?.map_or(0, |(_, g)| g))
    }

    /// What runs for each app, with its text.
    pub async fn running(&self) -> StoreResult<BTreeMap<String, (Running, Arc<str>)>> {
        let (index, _) = self.read_json::<BTreeMap<String, Running>>(INDEX).await?;
        let mut out = BTreeMap::new();
        for (app, r) in index {
            if let Some(text) = self.source(&app, r.version, &r.sha256).await? {
                out.insert(app, (r, text));
            }
        }
        Ok(out)
    }

    /// Version `version`'s text (cached by sha256).
    pub async fn source(&self, app: &str, version: u32, sha256: &str) -> StoreResult<Option<Arc<str>>> {
        if let Some(s) = self.sources.lock().ok().and_then(|m| m.get(sha256).cloned()) {
            return Ok(Some(s));
        }
        let Some((bytes, _)) = self.blobs.get(&source_key(app, version)).await.map_err(backend)? else {
            return Ok(None);
        };
        let text: Arc<str> = Arc::from(String::from_utf8_lossy(&bytes).as_ref());
        if let Ok(mut m) = self.sources.lock() {
            m.insert(sha256.to_string(), text.clone());
        }
        Ok(Some(text))
    }

    /// Counts a failed run of the script with `sha256` (a router's report).
    pub fn report_error(&self, app: &str, sha256: &str, message: &str, line: Option<u32>) {
        if let Ok(mut m) = self.health.lock() {
            let h = m.entry((app.to_string(), sha256.to_string())).or_default();
            h.errors += 1;
            h.last_error = Some(message.chars().take(500).collect());
            h.line = line;
            h.at = Some(now());
        }
    }

    /// How the script with `sha256` fares in this process's router.
    pub fn health(&self, app: &str, sha256: &str) -> ScriptHealth {
        self.health.lock().ok().and_then(|m| m.get(&(app.to_string(), sha256.to_string())).cloned()).unwrap_or_default()
    }

    /// Keeps what a router process (`node@started_ms`) reports of the app's
    /// scripts failing: its cumulative counts by sha256. A report with no
    /// more errors than the one kept (late, or repeated) changes nothing.
    pub async fn record_router_errors(
        &self,
        app: &str,
        router: &str,
        reports: &BTreeMap<String, ScriptHealth>,
    ) -> StoreResult<()> {
        for _ in 0..ATTEMPTS {
            let (mut all, generation) = self.read_json::<RouterErrors>(&errors_key(app)).await?;
            let mut changed = false;
            for (sha256, h) in reports {
                let by_router = all.entry(sha256.clone()).or_default();
                if by_router.get(router).is_none_or(|kept| h.errors > kept.errors) {
                    by_router.insert(router.to_string(), h.clone());
                    changed = true;
                }
                while by_router.len() > ROUTERS_KEPT {
                    let oldest = by_router.iter().min_by_key(|(_, h)| h.at).map(|(r, _)| r.clone());
                    oldest.map(|r| by_router.remove(&r));
                }
            }
            if !changed || self.write_json_if(&errors_key(app), &all, generation).await? {
                return Ok(());
            }
        }
        Err(busy(app))
    }

    /// How each of the app's scripts fares, by sha256: in this process's
    /// router and in every router process that reported.
    pub async fn health_of(&self, app: &str) -> StoreResult<HashMap<String, ScriptHealth>> {
        let (all, _) = self.read_json::<RouterErrors>(&errors_key(app)).await?;
        let mut out: HashMap<String, ScriptHealth> = HashMap::new();
        for (sha256, by_router) in &all {
            for h in by_router.values() {
                merge(out.entry(sha256.clone()).or_default(), h);
            }
        }
        if let Ok(m) = self.health.lock() {
            for ((_, sha256), h) in m.iter().filter(|((a, _), _)| a == app) {
                merge(out.entry(sha256.clone()).or_default(), h);
            }
        }
        Ok(out)
    }
}

fn busy(app: &str) -> StoreError {
    StoreError::Backend(format!(
        "the scripts of {app:?} kept changing under this write ({ATTEMPTS} attempts): try again"
    ))
}

fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ActorKind;

    /// Objects in memory. Each call yields first, so writers on one
    /// thread interleave between their reads and writes as processes do.
    #[derive(Default)]
    struct Memory(Mutex<HashMap<String, (Vec<u8>, i64)>>);

    #[async_trait]
    impl Blobs for Memory {
        async fn get(&self, key: &str) -> Result<Option<(Vec<u8>, i64)>, String> {
            tokio::task::yield_now().await;
            Ok(self.0.lock().map_err(|e| e.to_string())?.get(key).cloned())
        }
        async fn put_if(&self, key: &str, bytes: Vec<u8>, expected: i64) -> Result<Option<i64>, String> {
            tokio::task::yield_now().await;
            let mut m = self.0.lock().map_err(|e| e.to_string())?;
            let now = m.get(key).map_or(0, |(_, g)| *g);
            if now != expected {
                return Ok(None);
            }
            m.insert(key.to_string(), (bytes, now + 1));
            Ok(Some(now + 1))
        }
    }

    #[tokio::test]
    async fn concurrent_writers_lose_no_version_and_the_index_follows_the_manifest() {
        // Four gateway instances (each its own `Scripts`) over one bucket,
        // pushing and rolling back two apps at once.
        let blobs = Arc::new(Memory::default());
        let instances: Vec<Arc<Scripts>> = (0..4).map(|_| Arc::new(Scripts::new(blobs.clone()))).collect();
        let mut tasks = tokio::task::JoinSet::new();
        for (i, s) in instances.iter().enumerate() {
            for n in 0..4 {
                let s = s.clone();
                tasks.spawn(async move {
                    let app = if n % 2 == 0 { "web" } else { "api" };
                    let v = s.push(app, &format!("-- instance {i} push {n}"), alice()).await.expect("push");
                    if n == 3 {
                        s.activate(app, Some(v.version), alice()).await.expect("activate");
                    }
                    v
                });
            }
        }
        let pushed = tasks.join_all().await;
        let s = Scripts::new(blobs.clone());
        let index = s.running().await.expect("index");
        for app in ["web", "api"] {
            let m = s.manifest(app).await.expect("manifest");
            let mine: Vec<&ScriptVersion> = pushed.iter().filter(|v| m.versions.iter().any(|x| x == *v)).collect();
            assert_eq!(m.versions.len(), 8, "{app}: every push kept: {:?}", m.versions);
            assert_eq!(mine.len(), 8, "{app}: the versions pushed are the ones listed");
            assert!(m.versions.windows(2).all(|w| w[0].version < w[1].version), "{app}: numbers rise");
            for v in &m.versions {
                let text = s.source(app, v.version, &v.sha256).await.expect("read").expect("source kept");
                assert_eq!(sha256_hex(&text), v.sha256, "{app} v{}: its text is the one pushed", v.version);
            }
            let active = m.versions.iter().find(|v| Some(v.version) == m.active).expect("active");
            assert_eq!(index[app].0, Running { version: active.version, sha256: active.sha256.clone() });
        }
    }

    fn alice() -> Actor {
        Actor { kind: ActorKind::Token, name: "alice".into() }
    }

    #[tokio::test]
    async fn pushes_number_versions_and_rollback_moves_what_runs() {
        let s = Scripts::new(Arc::new(Memory::default()));
        assert!(s.running().await.expect("index").is_empty());
        let g0 = s.generation().await.expect("generation");
        let v1 = s.push("web", "function handle(r) end", alice()).await.expect("v1");
        let v2 = s.push("web", "function handle(r) return nil end", alice()).await.expect("v2");
        assert_eq!((v1.version, v2.version), (1, 2));
        assert_ne!(s.generation().await.expect("generation"), g0, "a push moves the index");
        let running = s.running().await.expect("index");
        assert_eq!(running["web"].0, Running { version: 2, sha256: v2.sha256.clone() });
        assert_eq!(&*running["web"].1, "function handle(r) return nil end");

        s.activate("web", Some(1), alice()).await.expect("rollback");
        assert_eq!(s.running().await.expect("index")["web"].0.version, 1);
        assert!(matches!(s.activate("web", Some(9), alice()).await, Err(StoreError::NotFound { .. })));
        s.activate("web", None, alice()).await.expect("back to the deployment's");
        assert!(s.running().await.expect("index").is_empty());
        let m = s.manifest("web").await.expect("manifest");
        assert_eq!((m.versions.len(), m.active), (2, None));
        assert!(s.push("web", &"x".repeat(MAX_SCRIPT_BYTES + 1), alice()).await.is_err());
    }

    #[tokio::test]
    async fn router_reports_of_failures_add_up_and_a_late_report_changes_nothing() {
        let s = Scripts::new(Arc::new(Memory::default()));
        let at = |ms: i64| chrono::DateTime::from_timestamp_millis(ms);
        let report = |errors: u64, line: u32, ms: i64| {
            let h = ScriptHealth {
                errors,
                last_error: Some(format!("web.lua:{line}: boom")),
                line: Some(line),
                at: at(ms),
            };
            BTreeMap::from([("aa".to_string(), h)])
        };
        s.record_router_errors("web", "edge-1@100", &report(3, 3, 1_000)).await.expect("kept");
        s.record_router_errors("web", "edge-2@200", &report(2, 7, 2_000)).await.expect("kept");
        // edge-1 again, late: fewer errors than it already said.
        s.record_router_errors("web", "edge-1@100", &report(1, 9, 3_000)).await.expect("ignored");
        s.report_error("web", "aa", "web.lua:5: in this process", Some(5));
        let health = s.health_of("web").await.expect("health");
        let h = &health["aa"];
        assert_eq!(h.errors, 3 + 2 + 1, "each router process's count, once");
        assert_eq!((h.line, h.last_error.as_deref()), (Some(5), Some("web.lua:5: in this process")), "the newest");
        assert!(s.health_of("api").await.expect("health").is_empty(), "another app's are its own");
        s.record_router_errors("web", "edge-1@100", &report(4, 8, 500)).await.expect("kept");
        assert_eq!(s.health_of("web").await.expect("health")["aa"].errors, 4 + 2 + 1);
    }

    #[test]
    fn errors_are_counted_per_script_text() {
        let s = Scripts::new(Arc::new(Memory::default()));
        s.report_error("web", "aa", "web.lua:3: boom", Some(3));
        s.report_error("web", "aa", "web.lua:4: bang", Some(4));
        let h = s.health("web", "aa");
        assert_eq!((h.errors, h.line, h.last_error.as_deref()), (2, Some(4), Some("web.lua:4: bang")));
        assert_eq!(s.health("web", "bb"), ScriptHealth::default());
    }
}
