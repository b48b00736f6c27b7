//! `bifrost serve-static`: the file server each replica of a
//! `runtime = "static"` app runs (index.html for directories, 404 otherwise).

use std::path::PathBuf;

use anyhow::Context;

#[derive(clap::Args, Debug)]
pub struct ServeStaticArgs {
    /// The folder to serve.
    #[arg(long)]
    pub root: PathBuf,
    /// The port to listen on (loopback).
    #[arg(long, env = "PORT")]
    pub port: u16,
}

pub async fn run(args: ServeStaticArgs) -> anyhow::Result<()> {
    let service = tower_http::services::ServeDir::new(&args.root).append_index_html_on_directories(true);
    let app = axum::Router::new().fallback_service(service);
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
