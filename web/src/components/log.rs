//! The live log: ANSI colors, search, and auto-scroll that follows new
//! lines until the reader scrolls up (and resumes at "Follow").

use leptos::html::Div;
use leptos::prelude::*;

use super::ansi;
use crate::model::LogLine;

#[component]
pub fn LogView(lines: ReadSignal<Vec<LogLine>>, #[prop(into)] live: Signal<bool>) -> impl IntoView {
    let query = RwSignal::new(String::new());
    let follow = RwSignal::new(true);
    let node = NodeRef::<Div>::new();
    let shown = Memo::new(move |_| {
        let q = query.get().to_lowercase();
        lines.with(|all| {
            all.iter()
                .filter(|l| q.is_empty() || ansi::plain(&l.line).to_lowercase().contains(&q))
                .cloned()
                .collect::<Vec<_>>()
        })
    });
    let to_bottom = move || {
        request_animation_frame(move || {
            if let Some(el) = node.get_untracked() {
                el.set_scroll_top(el.scroll_height());
            }
        })
    };
    // New lines scroll into view only while following.
    Effect::new(move |_| {
        shown.track();
        if follow.get_untracked() {
            to_bottom();
        }
    });
    let on_scroll = move |_| {
        if let Some(el) = node.get_untracked() {
            follow.set(el.scroll_top() + el.client_height() >= el.scroll_height() - 8);
        }
    };
    let count = move || {
        let (n, total) = (shown.with(Vec::len), lines.with(Vec::len));
        if query.with(String::is_empty) { format!("{total} lines") } else { format!("{n} of {total} lines match") }
    };
    view! {
        <div class="log-tools">
            <input type="search" placeholder="Search the log" aria-label="Search the log" data-testid="log-search"
                prop:value=move || query.get() on:input=move |ev| query.set(event_target_value(&ev))/>
            <span class="count" data-testid="log-count">{count}</span>
            <Show when=move || !follow.get()>
                <button class="btn ghost follow" on:click=move |_| { follow.set(true); to_bottom(); }>
                    "Follow ↓"
                </button>
            </Show>
        </div>
        <div class="log" node_ref=node on:scroll=on_scroll data-testid="log" data-follow=move || follow.get().to_string()>
            <Show when=move || !lines.with(Vec::is_empty) fallback=move || view! {
                <div class="log-empty">
                    {move || if live.get() { "Waiting for output…" } else { "No output." }}
                </div>
            }>
                <For each=move || shown.get() key=|l| l.seq let:l>
                    <div class="line" data-seq=l.seq data-stream=l.stream.clone()>
                        <span class="stream">{l.stream.clone()}</span>
                        <span class="text">
                            {ansi::parse(&l.line).into_iter()
                                .map(|s| view! { <span class=s.class>{s.text}</span> })
                                .collect_view()}
                        </span>
                    </div>
                </For>
            </Show>
        </div>
    }
}
