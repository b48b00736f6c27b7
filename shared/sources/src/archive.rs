//! Source trees as tar archives — uploads, and `git archive` of a commit —
//! checked before anything is written: every entry stays inside the tree
//! (no absolute paths, no `..`, no symlink or hard link whose target leaves
//! it, no devices), and the whole stays under caps on entries, unpacked
//! size and compression ratio. Decompression runs on a blocking thread, one
//! archive at a time, so a bomb costs the API and router nothing.

use std::io::Read;
use std::path::{Component, Path};

use bifrost_core::ports::SourceError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Files, directories and links in one tree.
    pub entries: usize,
    /// Sum of the entries' sizes.
    pub unpacked_bytes: u64,
    /// Unpacked / compressed, enforced once the tree passes [`RATIO_FLOOR`].
    pub ratio: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { entries: 100_000, unpacked_bytes: 1 << 30, ratio: 100 }
    }
}

/// Small trees may compress as well as they like (a few MiB of zeros is
/// not a bomb).
pub const RATIO_FLOOR: u64 = 64 << 20;

/// One archive is decompressed at a time: on two cores, a second bomb
/// must not take the core the API and router run on.
static WORK: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

/// Runs archive work on a blocking thread, after the ones before it.
pub async fn off_runtime<T, F>(f: F) -> Result<T, SourceError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, SourceError> + Send + 'static,
{
    let _turn = WORK.acquire().await.map_err(|e| SourceError::Unavailable(e.to_string()))?;
    tokio::task::spawn_blocking(f).await.map_err(|e| SourceError::Unavailable(format!("archive work failed: {e}")))?
}

fn invalid(msg: String) -> SourceError {
    SourceError::Invalid(msg)
}

/// Does `target`, a link at `entry`, resolve outside the tree?
fn leaves_tree(entry: &Path, target: &Path, relative_to_entry: bool) -> bool {
    if target.is_absolute() {
        return true;
    }
    let mut depth: i64 = 0;
    let base = if relative_to_entry { entry.parent().unwrap_or(Path::new("")) } else { Path::new("") };
    for c in base.components().chain(target.components()) {
        match c {
            Component::Normal(_) => depth += 1,
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return true;
                }
            }
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return true,
        }
    }
    false
}

/// Counts what the decompressor hands out and stops at a cap: a stream
/// that inflates past it is refused however its headers lie.
struct Capped<R> {
    inner: R,
    read: u64,
    cap: u64,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        if self.read > self.cap {
            return Err(std::io::Error::other("the archive inflates past its size limit"));
        }
        Ok(n)
    }
}

fn human(bytes: u64) -> String {
    if bytes >= 1 << 30 { format!("{} GiB", bytes >> 30) } else { format!("{} MiB", bytes >> 20) }
}

/// Walks a tar stream, checking each entry; `each` sees the ones that pass.
fn walk<R: Read>(
    reader: R,
    compressed: Option<u64>,
    limits: &Limits,
    mut each: impl FnMut(&mut tar::Entry<'_, Capped<R>>, &Path) -> Result<(), SourceError>,
) -> Result<usize, SourceError> {
    // Headers and padding cost up to 1.5 KiB per entry beyond the data.
    let cap = limits.unpacked_bytes + limits.entries as u64 * 1536;
    let mut tar = tar::Archive::new(Capped { inner: reader, read: 0, cap });
    let unreadable = |e: std::io::Error| invalid(format!("the source is not a readable .tar.gz archive: {e}"));
    let mut count = 0usize;
    let mut total = 0u64;
    for entry in tar.entries().map_err(unreadable)? {
        let mut entry = entry.map_err(unreadable)?;
        let path = entry.path().map_err(unreadable)?.into_owned();
        let name = path.display().to_string();
        if path.is_absolute() || path.components().any(|c| matches!(c, Component::ParentDir | Component::Prefix(_))) {
            return Err(invalid(format!("the source contains {name}, which points outside the source tree")));
        }
        use tar::EntryType as T;
        match entry.header().entry_type() {
            T::Regular | T::Continuous | T::Directory => {}
            T::Symlink | T::Link => {
                let symlink = entry.header().entry_type() == T::Symlink;
                let target = entry.link_name().map_err(unreadable)?.map(|t| t.into_owned()).unwrap_or_default();
                if leaves_tree(&path, &target, symlink) {
                    let kind = if symlink { "a symlink" } else { "a hard link" };
                    return Err(invalid(format!(
                        "the source contains {name}, {kind} to {}, which leaves the source tree",
                        target.display()
                    )));
                }
            }
            // pax and GNU long-name headers are consumed by the tar reader.
            T::XGlobalHeader | T::XHeader | T::GNULongName | T::GNULongLink => continue,
            other => {
                return Err(invalid(format!(
                    "the source contains {name}, of type {other:?}; only files, directories and links are allowed"
                )));
            }
        }
        count += 1;
        total += entry.size();
        if count > limits.entries {
            return Err(invalid(format!("the source has more than {} entries", limits.entries)));
        }
        if total > limits.unpacked_bytes {
            return Err(invalid(format!(
                "the source unpacks to more than {} (the limit; BIFROST_MAX_UNPACKED_BYTES)",
                human(limits.unpacked_bytes)
            )));
        }
        if let Some(c) = compressed
            && total > RATIO_FLOOR
            && total > c.saturating_mul(limits.ratio)
        {
            return Err(invalid(format!(
                "the source unpacks to more than {}× its compressed size ({} from {} bytes): refused as a \
                 decompression bomb",
                limits.ratio,
                human(total),
                c
            )));
        }
        each(&mut entry, &path)?;
    }
    Ok(count)
}

/// Checks an uploaded `.tar.gz` without writing anything. Returns its entry count.
pub fn check(gz: &[u8], limits: &Limits) -> Result<usize, SourceError> {
    walk(flate2::read::GzDecoder::new(gz), Some(gz.len() as u64), limits, |_, _| Ok(()))
}

/// Unpacks a tar stream into `dest` (an empty directory), entry by entry
/// after its checks.
pub fn unpack(reader: impl Read, compressed: Option<u64>, dest: &Path, limits: &Limits) -> Result<usize, SourceError> {
    walk(reader, compressed, limits, |entry, path| {
        match entry.unpack_in(dest) {
            Ok(true) => Ok(()),
            // tar refuses paths that would land outside `dest` through a link.
            Ok(false) => Err(invalid(format!("the source contains {}, which leaves the source tree", path.display()))),
            Err(e) => Err(SourceError::Invalid(format!("cannot unpack {}: {e}", path.display()))),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tarball(build: impl FnOnce(&mut tar::Builder<flate2::write::GzEncoder<Vec<u8>>>)) -> Vec<u8> {
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let mut b = tar::Builder::new(gz);
        build(&mut b);
        b.into_inner().and_then(|gz| gz.finish()).expect("tarball")
    }

    fn file(b: &mut tar::Builder<flate2::write::GzEncoder<Vec<u8>>>, path: &str, data: &[u8]) {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, path, data).expect("append");
    }

    fn link(b: &mut tar::Builder<flate2::write::GzEncoder<Vec<u8>>>, kind: tar::EntryType, path: &str, to: &str) {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(0);
        h.set_mode(0o777);
        b.append_link(&mut h, path, to).expect("link");
    }

    #[test]
    fn links_inside_the_tree_are_fine() {
        let t = tarball(|b| {
            file(b, "public/index.html", b"hi");
            link(b, tar::EntryType::Symlink, "public/home.html", "index.html");
            link(b, tar::EntryType::Symlink, "current", "public/../public");
            link(b, tar::EntryType::Link, "copy.html", "public/index.html");
        });
        assert_eq!(check(&t, &Limits::default()), Ok(4));
    }

    #[test]
    fn a_symlink_out_of_the_tree_is_refused_by_name() {
        for target in ["/", "/etc/shadow", "../../data", "a/../../.."] {
            let t = tarball(|b| link(b, tar::EntryType::Symlink, "public/root", target));
            let err = check(&t, &Limits::default()).expect_err(target).to_string();
            assert!(err.contains("public/root") && err.contains("leaves the source tree"), "{target}: {err}");
        }
    }

    #[test]
    fn a_hard_link_out_of_the_tree_is_refused_by_name() {
        let t = tarball(|b| link(b, tar::EntryType::Link, "shadow", "/etc/shadow"));
        let err = check(&t, &Limits::default()).expect_err("refused").to_string();
        assert!(err.contains("shadow, a hard link to /etc/shadow"), "{err}");
    }

    #[test]
    fn a_bomb_is_refused_before_it_is_inflated() {
        // 200 MiB of zeros compress to ~200 KiB: over the ratio.
        let zeros = vec![0u8; 200 << 20];
        let t = tarball(|b| file(b, "zeros", &zeros));
        let err = check(&t, &Limits::default()).expect_err("refused").to_string();
        assert!(err.contains("decompression bomb"), "{err}");
        let err = check(&t, &Limits { unpacked_bytes: 100 << 20, ..Limits::default() }).expect_err("refused");
        assert!(err.to_string().contains("unpacks to more than 100 MiB"), "{err}");
    }

    #[test]
    fn too_many_entries_are_refused() {
        let t = tarball(|b| {
            for i in 0..11 {
                file(b, &format!("f{i}"), b"x");
            }
        });
        let err = check(&t, &Limits { entries: 10, ..Limits::default() }).expect_err("refused");
        assert!(err.to_string().contains("more than 10 entries"), "{err}");
    }

    #[test]
    fn unpacking_refuses_an_escaping_link_and_writes_inside_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let t = tarball(|b| {
            file(b, "ok.txt", b"ok");
            link(b, tar::EntryType::Symlink, "out", "/tmp");
        });
        let err = unpack(flate2::read::GzDecoder::new(t.as_slice()), None, dir.path(), &Limits::default());
        assert!(err.expect_err("refused").to_string().contains("out, a symlink to /tmp"));
        assert!(dir.path().join("ok.txt").exists() && !dir.path().join("out").exists());
    }
}
