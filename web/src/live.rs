//! Live updates in the browser: an `EventSource` on `/ui/events…` (the
//! server relays the API's SSE with the session's token). The browser
//! reconnects by itself and sends `Last-Event-ID`, so the server resumes
//! exactly after the last event seen; callers also drop any `seq` they
//! already have, so nothing shows twice. On the server this does nothing.

use leptos::prelude::*;

use crate::model::FeedEvent;

/// The state of the live connection, shown beside live views.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conn {
    Connecting,
    Live,
    Reconnecting,
    /// The server refused (signed out); the browser will not retry.
    Closed,
}

impl Conn {
    pub fn label(self) -> &'static str {
        match self {
            Conn::Connecting => "connecting",
            Conn::Live => "live",
            Conn::Reconnecting => "reconnecting…",
            Conn::Closed => "offline",
        }
    }
}

/// Subscribes to `url` while the calling component is mounted; `on_event`
/// gets each `status`, `log` and `health` event. `on_open` runs on every
/// (re)connection: pages that start "from now" refresh what they show.
pub fn use_feed(
    url: String,
    on_event: impl Fn(&'static str, FeedEvent) + 'static,
    on_open: impl Fn() + 'static,
) -> ReadSignal<Conn> {
    let (conn, set_conn) = signal(Conn::Connecting);
    #[cfg(feature = "hydrate")]
    connect(url, on_event, on_open, set_conn);
    #[cfg(not(feature = "hydrate"))]
    let _ = (url, on_event, on_open, set_conn);
    conn
}

#[cfg(feature = "hydrate")]
fn connect(
    url: String,
    on_event: impl Fn(&'static str, FeedEvent) + 'static,
    on_open: impl Fn() + 'static,
    set_conn: WriteSignal<Conn>,
) {
    use std::rc::Rc;
    use wasm_bindgen::JsCast;
    use wasm_bindgen::closure::Closure;

    let on_event = Rc::new(on_event);
    let on_open = Rc::new(on_open);
    Effect::new(move |_| {
        let Ok(es) = web_sys::EventSource::new(&url) else {
            set_conn.set(Conn::Closed);
            return;
        };
        let mut listeners = Vec::new();
        for kind in ["status", "log", "health"] {
            let cb = on_event.clone();
            let listener = Closure::<dyn FnMut(web_sys::MessageEvent)>::new(move |ev: web_sys::MessageEvent| {
                if let Some(item) = ev.data().as_string().and_then(|d| serde_json::from_str::<FeedEvent>(&d).ok()) {
                    cb(kind, item);
                }
            });
            let _ = es.add_event_listener_with_callback(kind, listener.as_ref().unchecked_ref());
            listeners.push(listener);
        }
        let opened = on_open.clone();
        let open = Closure::<dyn FnMut(web_sys::Event)>::new(move |_| {
            set_conn.set(Conn::Live);
            opened();
        });
        let source = es.clone();
        let error = Closure::<dyn FnMut(web_sys::Event)>::new(move |_| {
            // CLOSED (2): the server refused; CONNECTING: the browser retries.
            set_conn.set(if source.ready_state() == 2 { Conn::Closed } else { Conn::Reconnecting });
        });
        es.set_onopen(Some(open.as_ref().unchecked_ref()));
        es.set_onerror(Some(error.as_ref().unchecked_ref()));
        let held = send_wrapper::SendWrapper::new((es, listeners, open, error));
        on_cleanup(move || {
            held.0.close();
            drop(held);
        });
    });
}

/// A badge for the connection state.
#[component]
pub fn LiveBadge(conn: ReadSignal<Conn>) -> impl IntoView {
    view! {
        <span class=move || format!("live-badge {}", conn.get().label().trim_end_matches('…'))
            data-testid="live" data-conn=move || conn.get().label()>
            {move || conn.get().label()}
        </span>
    }
}
