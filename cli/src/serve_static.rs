//! `bifrost serve-static`: the file server each replica of a
//! `runtime = "static"` app runs (index.html for directories, 404 otherwise).
//! It never follows a link out of its root: a request whose file resolves
//! outside it is a 404, whatever the tree holds. (It also runs inside the
//! app's sandbox, which could not read such a file anyway.)

use std::path::PathBuf;

use anyhow::Context;

/// Threads reading files at once (tokio's blocking pool; its default, 512,
/// is what a replica's memory limit cannot hold).
pub const BLOCKING_THREADS: usize = 8;

#[derive(clap::Args, Debug)]
pub struct ServeStaticArgs {
    /// The folder to serve.
    #[arg(long)]
    pub root: PathBuf,
    /// The port to listen on (loopback).
    #[arg(long, env = "PORT")]
    pub port: u16,
}

/// Does the file a request names stay inside `root` once every link is
/// resolved? (A missing file is fine: the file server answers 404.)
fn inside(root: &std::path::Path, path: &str) -> bool {
    let Ok(decoded) = percent_decode(path) else { return false };
    let mut p = root.to_path_buf();
    for part in decoded.split('/').filter(|s| !s.is_empty() && *s != ".") {
        if part == ".." {
            return false;
        }
        p.push(part);
    }
    match p.canonicalize() {
        Ok(real) => real.starts_with(root),
        Err(_) => true,
    }
}

fn percent_decode(s: &str) -> Result<String, ()> {
    let mut out = Vec::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3).ok_or(())?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| ())?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| ())
}

pub async fn run(args: ServeStaticArgs) -> anyhow::Result<()> {
    let root = args.root.canonicalize().with_context(|| format!("resolving {}", args.root.display()))?;
    let service = tower_http::services::ServeDir::new(&root).append_index_html_on_directories(true);
    let guard_root = root.clone();
    let app = axum::Router::new().fallback_service(service).layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| {
            let ok = inside(&guard_root, req.uri().path());
            async move {
                if ok {
                    next.run(req).await
                } else {
                    axum::response::IntoResponse::into_response((axum::http::StatusCode::NOT_FOUND, "not found"))
                }
            }
        },
    ));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port))
        .await
        .with_context(|| format!("cannot listen on 127.0.0.1:{}", args.port))?;
    println!("serving {} on 127.0.0.1:{}", args.root.display(), args.port);
    let shutdown = async {
        #[cfg(unix)]
        if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            term.recv().await;
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    };
    // Without TCP_NODELAY a response written as headers + body waits for
    // the client's delayed ACK (40 ms): the difference between ~2k and
    // tens of thousands of requests per second.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await.context("serving files")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_out_of_the_root_are_not_served() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("public");
        std::fs::create_dir_all(root.join("sub")).expect("mkdir");
        std::fs::write(root.join("index.html"), "hi").expect("write");
        std::os::unix::fs::symlink("/", root.join("root")).expect("link");
        std::os::unix::fs::symlink("index.html", root.join("home.html")).expect("link");
        let root = root.canonicalize().expect("root");
        assert!(inside(&root, "/index.html"));
        assert!(inside(&root, "/home.html"));
        assert!(inside(&root, "/sub/"));
        assert!(inside(&root, "/missing"));
        assert!(!inside(&root, "/root/etc/shadow"));
        assert!(!inside(&root, "/root"));
        assert!(!inside(&root, "/%2e%2e/x"));
    }
}
