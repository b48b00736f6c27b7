#![recursion_limit = "256"]
//! Bifrost's dashboard: a Leptos app rendered on the server (feature `ssr`)
//! and hydrated in the browser (feature `hydrate`, built to wasm by
//! `cargo xtask web`). Pages load through server functions that call the
//! gateway's REST API with the signed-in token; live state arrives over SSE.

pub mod app;
pub mod components;
pub mod live;
pub mod model;
pub mod pages;
#[cfg(feature = "ssr")]
pub mod server;

/// Where the server functions are mounted (beside `/api/v1`, not under it).
pub const FN_PREFIX: &str = "/ui/api";

/// The browser entry point: attaches to the server-rendered page.
#[cfg(feature = "hydrate")]
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    leptos::mount::hydrate_body(app::App);
}
