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

/// Where script objects live.
#[async_trait]
pub trait Blobs: Send + Sync {
    /// The object and its generation; `None` if it does not exist.
    async fn get(&self, key: &str) -> Result<Option<(Vec<u8>, i64)>, String>;
    /// Writes the object whole; returns its new generation.
    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<i64, String>;
}

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

    async fn write_json(&self, key: &str, value: &impl Serialize) -> StoreResult<()> {
        let bytes = serde_json::to_vec_pretty(value).map_err(|e| StoreError::Backend(e.to_string()))?;
        self.blobs.put(key, bytes).await.map(drop).map_err(backend)
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
        let mut manifest = self.manifest(app).await?;
        let version = manifest.versions.last().map_or(1, |v| v.version + 1);
        let at = now();
        let v =
            ScriptVersion { version, sha256: sha256_hex(source), bytes: source.len(), pushed_by: actor.clone(), at };
        self.blobs.put(&source_key(app, version), source.as_bytes().to_vec()).await.map_err(backend)?;
        manifest.versions.push(v.clone());
        manifest.active = Some(version);
        manifest.changed_by = Some(actor);
        manifest.changed_at = Some(at);
        self.commit(app, &manifest).await?;
        Ok(v)
    }

    /// Makes `version` the running one (`None`: back to the deployment's
    /// own script). Refuses a version that does not exist.
    pub async fn activate(&self, app: &str, version: Option<u32>, actor: Actor) -> StoreResult<Manifest> {
        let _one = self.write.lock().await;
        let mut manifest = self.manifest(app).await?;
        if let Some(v) = version
            && !manifest.versions.iter().any(|x| x.version == v)
        {
            return Err(StoreError::not_found("script version", format!("{app} v{v}")));
        }
        manifest.active = version;
        manifest.changed_by = Some(actor);
        manifest.changed_at = Some(now());
        self.commit(app, &manifest).await?;
        Ok(manifest)
    }

    /// Writes the manifest, then the index routers poll.
    async fn commit(&self, app: &str, manifest: &Manifest) -> StoreResult<()> {
        self.write_json(&manifest_key(app), manifest).await?;
        let (mut index, _) = self.read_json::<BTreeMap<String, Running>>(INDEX).await?;
        match manifest.active.and_then(|a| manifest.versions.iter().find(|v| v.version == a)) {
            Some(v) => index.insert(app.to_string(), Running { version: v.version, sha256: v.sha256.clone() }),
            None => index.remove(app),
        };
        self.write_json(INDEX, &index).await
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
}

fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ActorKind;

    #[derive(Default)]
    struct Memory(Mutex<HashMap<String, (Vec<u8>, i64)>>);

    #[async_trait]
    impl Blobs for Memory {
        async fn get(&self, key: &str) -> Result<Option<(Vec<u8>, i64)>, String> {
            Ok(self.0.lock().map_err(|e| e.to_string())?.get(key).cloned())
        }
        async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<i64, String> {
            let mut m = self.0.lock().map_err(|e| e.to_string())?;
            let g = m.get(key).map_or(1, |(_, g)| g + 1);
            m.insert(key.to_string(), (bytes, g));
            Ok(g)
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
