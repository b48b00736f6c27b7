//! The Cloud Storage adapter against PyPI's `gcp-storage-emulator`: whole
//! and ranged reads, and uploaded source archives kept in a bucket and read
//! back by any instance, checked against their digest.

use bifrost_core::domain::Source;
use bifrost_core::ports::{SourceError, Sources};
use bifrost_gcp::storage::{Gcs, GcsSources, parse_uri};
use bifrost_testkit::emulator::{Emulator, Kind};
use bytes::Bytes;

/// Buckets come from terraform on GCP; on the emulator, from its JSON API.
pub async fn create_bucket(host: &str, name: &str) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let resp = reqwest::Client::new()
        .post(format!("http://{host}/storage/v1/b?project=bifrost-test"))
        .json(&serde_json::json!({ "name": name }))
        .send()
        .await
        .expect("the emulator answers");
    assert!(resp.status().is_success(), "creating bucket {name}: {}", resp.status());
}

fn tar_gz(files: &[(&str, &str)]) -> Vec<u8> {
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()));
    for (path, body) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(body.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, path, body.as_bytes()).expect("appends");
    }
    tar.into_inner().expect("tar").finish().expect("gzip")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_storage_on_the_emulator() {
    let emulator = Emulator::start(Kind::Storage).expect("the storage emulator starts");
    let endpoint = format!("http://{}", emulator.host);
    create_bucket(&emulator.host, "sources").await;
    let gcs = Gcs::connect(Some(&endpoint)).await.expect("connects");

    // Whole and ranged reads; a missing object is None, not an error.
    let generation = gcs
        .put("sources", "logs/build.txt", Bytes::from_static(b"line 1\nline 2\n"), "text/plain")
        .await
        .expect("puts");
    assert!(generation > 0, "a generation comes back: {generation}");
    assert_eq!(gcs.get("sources", "logs/build.txt").await.expect("gets").as_deref(), Some(&b"line 1\nline 2\n"[..]));
    assert_eq!(gcs.get_from("sources", "logs/build.txt", 7).await.expect("ranged").as_deref(), Some(&b"line 2\n"[..]));
    let past_end = gcs.get_from("sources", "logs/build.txt", 14).await.expect("past the end is not an error");
    assert_eq!(past_end.as_deref(), Some(&b""[..]));
    assert_eq!(gcs.get("sources", "nope.txt").await.expect("missing is fine"), None);
    assert!(gcs.get("no-such-bucket", "x").await.map(|o| o.is_none()).unwrap_or(true));

    // An uploaded archive lands in the bucket by digest and is read back
    // by another instance (its own scratch directory).
    let archive = tar_gz(&[("deploy.toml", "[app]\nname = \"up\"\n"), ("src/main.py", "print('hi')\n")]);
    let a = tempfile::tempdir().expect("tmp");
    let b = tempfile::tempdir().expect("tmp");
    let one = GcsSources::new(a.path(), gcs.clone(), "sources");
    let two = GcsSources::new(b.path(), gcs.clone(), "sources");
    let source = one.store_archive(archive.clone()).await.expect("stores the upload");
    let Source::Archive { uri, sha256 } = &source else { panic!("an archive source: {source:?}") };
    let (bucket, object) = parse_uri(uri).expect("a gs:// uri");
    assert_eq!((bucket, object), ("sources", format!("uploads/{sha256}.tar.gz").as_str()));
    assert_eq!(gcs.get(bucket, object).await.expect("gets").as_deref(), Some(archive.as_slice()));
    let toml = two.read_file(&source, "deploy.toml").await.expect("reads");
    assert_eq!(toml.as_deref(), Some("[app]\nname = \"up\"\n"));
    assert_eq!(two.read_file(&source, "missing.txt").await.expect("reads"), None);
    let dest = b.path().join("checkout");
    two.checkout(&source, &dest).await.expect("checks out");
    assert_eq!(std::fs::read_to_string(dest.join("src/main.py")).expect("unpacked"), "print('hi')\n");

    // Not an archive: refused before anything is written.
    let err = one.store_archive(b"not a tarball".to_vec()).await.expect_err("refused");
    assert!(matches!(err, SourceError::Invalid(ref m) if m.contains("not a readable .tar.gz")), "{err:?}");

    // A digest that does not match the object, and an object that is gone.
    let forged = Source::Archive { uri: uri.clone(), sha256: "0".repeat(64) };
    let err = two.read_file(&forged, "deploy.toml").await.expect_err("refused");
    assert!(matches!(err, SourceError::Invalid(ref m) if m.contains("does not match")), "{err:?}");
    let gone = Source::Archive { uri: "gs://sources/uploads/gone.tar.gz".into(), sha256: "1".repeat(64) };
    let err = two.read_file(&gone, "deploy.toml").await.expect_err("refused");
    assert!(matches!(err, SourceError::NotFound(ref m) if m.contains("is gone")), "{err:?}");
    drop(emulator);
}

/// The routing scripts bucket is written by every gateway instance: a write
/// lands only on the generation it read (`ifGenerationMatch`), so pushes
/// from several instances at once lose no version and the index routers
/// poll ends on what the manifest says runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_script_pushes_through_cloud_storage_lose_nothing() {
    use std::sync::Arc;

    use bifrost_core::domain::{Actor, ActorKind};
    use bifrost_core::scripts::{Blobs, Scripts};
    use bifrost_gcp::storage::GcsBlobs;

    let emulator = Emulator::start(Kind::Storage).expect("the storage emulator starts");
    create_bucket(&emulator.host, "scripts").await;
    let gcs = Gcs::connect(Some(&format!("http://{}", emulator.host))).await.expect("connects");
    let blobs = GcsBlobs::new(gcs, "scripts");

    // The precondition itself: create-only, then only on the generation read.
    let g1 = blobs.put_if("web/v1.lua", b"one".to_vec(), 0).await.expect("writes").expect("created");
    assert_eq!(blobs.put_if("web/v1.lua", b"two".to_vec(), 0).await.expect("answers"), None, "it exists");
    assert_eq!(blobs.get("web/v1.lua").await.expect("reads"), Some((b"one".to_vec(), g1)), "the read's generation");
    let g2 = blobs.put_if("web/v1.lua", b"two".to_vec(), g1).await.expect("writes").expect("on the one read");
    assert_ne!(g2, g1);
    assert_eq!(blobs.put_if("web/v1.lua", b"three".to_vec(), g1).await.expect("answers"), None, "a stale read");
    assert_eq!(blobs.get("web/v1.lua").await.expect("reads"), Some((b"two".to_vec(), g2)));

    // Three gateway instances pushing to one app at once.
    let instances: Vec<Arc<Scripts>> =
        (0..3).map(|_| Arc::new(Scripts::new(Arc::new(blobs.clone()) as Arc<dyn Blobs>))).collect();
    let actor = Actor { kind: ActorKind::Token, name: "ci".into() };
    let mut tasks = tokio::task::JoinSet::new();
    for (i, s) in instances.iter().enumerate() {
        for n in 0..3 {
            let (s, actor) = (s.clone(), actor.clone());
            tasks.spawn(async move { s.push("api", &format!("-- instance {i} push {n}"), actor).await.expect("push") });
        }
    }
    let pushed = tasks.join_all().await;
    let manifest = instances[0].manifest("api").await.expect("manifest");
    assert_eq!(manifest.versions.len(), 9, "every push kept: {:?}", manifest.versions);
    for v in &pushed {
        assert!(manifest.versions.contains(v), "{v:?} is listed");
        let text = instances[1].source("api", v.version, &v.sha256).await.expect("reads").expect("kept");
        assert!(text.starts_with("-- instance"), "v{}: {text}", v.version);
    }
    let running = instances[2].running().await.expect("index");
    assert_eq!(Some(running["api"].0.version), manifest.active, "the index follows the manifest");
    drop(emulator);
}
