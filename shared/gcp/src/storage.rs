//! Cloud Storage through Google's `google-cloud-storage` client: uploaded
//! source archives and Cloud Build's source tarballs and logs. Objects are
//! named by `gs://BUCKET/OBJECT` URIs, which is what deployments store.
//!
//! Tested against PyPI's `gcp-storage-emulator` (Google ships no Cloud
//! Storage emulator). What it does differently from Cloud Storage, and what
//! this adapter does about it, is in ARCHITECTURE.md (`shared/testkit`).

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;
use google_cloud_storage::client::Storage;
use google_cloud_storage::model_ext::ReadRange;
use sha2::{Digest, Sha256};

use bifrost_core::domain::Source;
use bifrost_core::ports::{SourceError, Sources};
use bifrost_core::scripts::Blobs;
use bifrost_sources::GitSources;

/// `gs://bucket/a/b` → (`bucket`, `a/b`).
pub fn parse_uri(uri: &str) -> Option<(&str, &str)> {
    let (bucket, object) = uri.strip_prefix("gs://")?.split_once('/')?;
    (!bucket.is_empty() && !object.is_empty()).then_some((bucket, object))
}

/// The client's resource name of a bucket.
fn bucket_name(bucket: &str) -> String {
    format!("projects/_/buckets/{bucket}")
}

/// A Cloud Storage client.
#[derive(Clone, Debug)]
pub struct Gcs {
    client: Storage,
}

impl Gcs {
    /// Connects with the service's own credentials, or to an emulator
    /// (`http://127.0.0.1:PORT`) with anonymous ones.
    pub async fn connect(endpoint: Option<&str>) -> Result<Self, String> {
        let mut builder = Storage::builder();
        if let Some(e) = endpoint {
            builder = builder
                .with_endpoint(e.to_string())
                .with_credentials(google_cloud_auth::credentials::anonymous::Builder::new().build());
        }
        let client = builder.build().await.map_err(|e| format!("connecting to Cloud Storage: {e}"))?;
        Ok(Gcs { client })
    }

    /// Writes an object whole; returns its generation.
    pub async fn put(&self, bucket: &str, object: &str, bytes: Bytes, content_type: &str) -> Result<i64, String> {
        let written = self
            .client
            .write_object(bucket_name(bucket), object, bytes)
            .set_content_type(content_type)
            .send_unbuffered()
            .await
            .map_err(|e| format!("writing gs://{bucket}/{object}: {e}"))?;
        Ok(written.generation)
    }

    /// Writes an object whole only if its generation is still `expected`
    /// (`0`: only if it does not exist, Cloud Storage's `ifGenerationMatch`):
    /// `Ok(Some(generation))`, or `Ok(None)` when it changed first (412).
    pub async fn put_if(
        &self,
        bucket: &str,
        object: &str,
        bytes: Bytes,
        content_type: &str,
        expected: i64,
    ) -> Result<Option<i64>, String> {
        let written = self
            .client
            .write_object(bucket_name(bucket), object, bytes)
            .set_content_type(content_type)
            .set_if_generation_match(expected)
            .send_unbuffered()
            .await;
        match written {
            Ok(o) => Ok(Some(o.generation)),
            Err(e) if e.http_status_code() == Some(412) => Ok(None),
            Err(e) => Err(format!("writing gs://{bucket}/{object}: {e}")),
        }
    }

    /// Reads an object whole; `Ok(None)` if it does not exist.
    pub async fn get(&self, bucket: &str, object: &str) -> Result<Option<Bytes>, String> {
        self.get_from(bucket, object, 0).await
    }

    /// Reads an object whole with its generation; `Ok(None)` if it does
    /// not exist.
    pub async fn get_versioned(&self, bucket: &str, object: &str) -> Result<Option<(Bytes, i64)>, String> {
        let what = || format!("gs://{bucket}/{object}");
        let mut resp = match self.client.read_object(bucket_name(bucket), object).send().await {
            Ok(r) => r,
            Err(e) if e.http_status_code() == Some(404) => return Ok(None),
            Err(e) => return Err(format!("reading {}: {e}", what())),
        };
        let generation = resp.object().generation;
        let mut out = Vec::new();
        while let Some(chunk) = resp.next().await {
            out.extend_from_slice(&chunk.map_err(|e| format!("reading {}: {e}", what()))?);
        }
        Ok(Some((Bytes::from(out), generation)))
    }

    /// Reads an object from `offset` to its end (a growing log's new
    /// part); `Ok(None)` if it does not exist, empty if nothing is new.
    pub async fn get_from(&self, bucket: &str, object: &str, offset: u64) -> Result<Option<Bytes>, String> {
        let what = || format!("gs://{bucket}/{object}");
        let mut req = self.client.read_object(bucket_name(bucket), object);
        if offset > 0 {
            req = req.set_read_range(ReadRange::offset(offset));
        }
        let mut resp = match req.send().await {
            Ok(r) => r,
            Err(e) if e.http_status_code() == Some(404) => return Ok(None),
            // Reading at or past the end is "nothing new", not an error.
            Err(e) if e.http_status_code() == Some(416) => return Ok(Some(Bytes::new())),
            Err(e) => return Err(format!("reading {}: {e}", what())),
        };
        let mut out = Vec::new();
        while let Some(chunk) = resp.next().await {
            out.extend_from_slice(&chunk.map_err(|e| format!("reading {}: {e}", what()))?);
        }
        Ok(Some(Bytes::from(out)))
    }
}

/// Sources on Cloud Run: git repositories as embedded (mirrors in the
/// instance's /tmp), uploaded archives in a Cloud Storage bucket so every
/// function instance can read them.
pub struct GcsSources {
    git: GitSources,
    gcs: Gcs,
    bucket: String,
    /// Archives downloaded from the bucket, by digest.
    cache: PathBuf,
}

impl GcsSources {
    pub fn new(scratch: &Path, gcs: Gcs, bucket: &str) -> Self {
        GcsSources { git: GitSources::new(scratch), gcs, bucket: bucket.to_string(), cache: scratch.join("sources") }
    }

    /// The archive as a local file GitSources can read, fetched once and
    /// checked against the digest the deployment recorded.
    async fn local(&self, source: &Source) -> Result<Source, SourceError> {
        let Source::Archive { uri, sha256 } = source else {
            return Ok(source.clone());
        };
        let Some((bucket, object)) = parse_uri(uri) else {
            return Err(SourceError::Invalid(format!("{uri} is not a gs:// URI")));
        };
        let path = self.cache.join(format!("{sha256}.tar.gz"));
        if !path.exists() {
            let bytes = self
                .gcs
                .get(bucket, object)
                .await
                .map_err(SourceError::Unavailable)?
                .ok_or_else(|| SourceError::NotFound(format!("uploaded archive {uri} is gone")))?;
            if hex::encode(Sha256::digest(&bytes)) != *sha256 {
                return Err(SourceError::Invalid(format!("{uri} does not match its recorded sha256 {sha256}")));
            }
            let io = |e: std::io::Error| SourceError::Unavailable(format!("caching {uri}: {e}"));
            std::fs::create_dir_all(&self.cache).map_err(io)?;
            let tmp = path.with_extension(format!("part{}", ulid::Ulid::new()));
            std::fs::write(&tmp, &bytes).map_err(io)?;
            std::fs::rename(&tmp, &path).map_err(io)?;
        }
        Ok(Source::Archive { uri: format!("file://{}", path.display()), sha256: sha256.clone() })
    }
}

#[async_trait]
impl Sources for GcsSources {
    async fn check_repo(&self, repo: &str) -> Result<(), SourceError> {
        self.git.check_repo(repo).await
    }

    async fn default_branch(&self, repo: &str) -> Result<String, SourceError> {
        self.git.default_branch(repo).await
    }

    async fn resolve(&self, repo: &str, git_ref: &str) -> Result<String, SourceError> {
        self.git.resolve(repo, git_ref).await
    }

    async fn branch_head(&self, repo: &str, branch: &str) -> Result<String, SourceError> {
        self.git.branch_head(repo, branch).await
    }

    async fn read_file(&self, source: &Source, path: &str) -> Result<Option<String>, SourceError> {
        self.git.read_file(&self.local(source).await?, path).await
    }

    async fn commit_info(&self, source: &Source) -> Option<bifrost_core::ports::CommitInfo> {
        self.git.commit_info(source).await
    }

    async fn checkout(&self, source: &Source, dest: &Path) -> Result<(), SourceError> {
        self.git.checkout(&self.local(source).await?, dest).await
    }

    async fn store_archive(&self, bytes: Vec<u8>) -> Result<Source, SourceError> {
        let bytes = Bytes::from(bytes);
        let checked = bytes.clone();
        let limits = bifrost_sources::archive::Limits::default();
        bifrost_sources::archive::off_runtime(move || bifrost_sources::archive::check(&checked, &limits)).await?;
        let sha256 = hex::encode(Sha256::digest(&bytes));
        let object = format!("uploads/{sha256}.tar.gz");
        // Not application/json (the emulator's simple upload chokes on it)
        // and not application/gzip with a Content-Encoding (clients would
        // decompress it on read): a plain archive.
        self.gcs.put(&self.bucket, &object, bytes, "application/x-tar+gzip").await.map_err(SourceError::Unavailable)?;
        Ok(Source::Archive { uri: format!("gs://{}/{object}", self.bucket), sha256 })
    }
}

/// One bucket's objects as [`Blobs`]: the routing scripts bucket, with
/// Cloud Storage's own generations (so concurrent gateway instances write
/// conditionally on them).
#[derive(Clone, Debug)]
pub struct GcsBlobs {
    gcs: Gcs,
    bucket: String,
}

impl GcsBlobs {
    pub fn new(gcs: Gcs, bucket: &str) -> Self {
        GcsBlobs { gcs, bucket: bucket.to_string() }
    }
}

#[async_trait]
impl Blobs for GcsBlobs {
    async fn get(&self, key: &str) -> Result<Option<(Vec<u8>, i64)>, String> {
        Ok(self.gcs.get_versioned(&self.bucket, key).await?.map(|(b, g)| (b.to_vec(), g)))
    }

    async fn put_if(&self, key: &str, bytes: Vec<u8>, expected: i64) -> Result<Option<i64>, String> {
        self.gcs.put_if(&self.bucket, key, Bytes::from(bytes), "application/octet-stream", expected).await
    }
}
