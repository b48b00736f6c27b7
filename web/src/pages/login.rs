//! Signing in with an API token (kept in an HttpOnly cookie) and out.

use leptos::prelude::*;
use leptos_router::hooks::use_query_map;

use crate::components::error_text;

/// Checks the token with the API, then sets the session cookie and sends
/// the browser back where it was going.
#[server(prefix = "/ui/api", endpoint = "login")]
pub async fn login(token: String, next: Option<String>) -> Result<(), ServerFnError> {
    use crate::server::{fail, state};
    use axum::http::{HeaderValue, header::SET_COOKIE};
    let state = state()?;
    let token = token.trim().to_string();
    if token.is_empty() {
        return Err(ServerFnError::new(
            "paste an API token: `bifrost up` prints the admin token when it first starts; \
             `bifrost tokens create NAME --role viewer` makes more",
        ));
    }
    state.backend.get::<serde_json::Value>("/api/v1/whoami", &token).await.map_err(fail)?;
    let cookie = HeaderValue::from_str(&state.session_cookie(Some(&token)))
        .map_err(|_| ServerFnError::new("could not make the session cookie"))?;
    expect_context::<leptos_axum::ResponseOptions>().append_header(SET_COOKIE, cookie);
    // Only paths on this site: never an open redirect.
    let next = next.filter(|n| crate::server::routes::same_site_path(n)).unwrap_or_else(|| "/".into());
    leptos_axum::redirect(&next);
    Ok(())
}

#[server(prefix = "/ui/api", endpoint = "logout")]
pub async fn logout() -> Result<(), ServerFnError> {
    use axum::http::{HeaderValue, header::SET_COOKIE};
    let state = crate::server::state()?;
    let cookie = state.session_cookie(None);
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        expect_context::<leptos_axum::ResponseOptions>().append_header(SET_COOKIE, v);
    }
    leptos_axum::redirect("/login");
    Ok(())
}

#[component]
pub fn LoginPage() -> impl IntoView {
    let action = ServerAction::<Login>::new();
    let query = use_query_map();
    let next = move || query.read().get("next").unwrap_or_else(|| "/".into());
    view! {
        <section class="login">
            <h1>"Sign in to Bifrost"</h1>
            <p class="hint">
                "Use an API token. The admin token is printed by "<code>"bifrost up"</code>
                " the first time it starts; "<code>"bifrost tokens create NAME --role viewer"</code>" makes more."
            </p>
            <ActionForm action=action>
                <input type="hidden" name="next" value=next/>
                <label for="token">"API token"</label>
                <input id="token" type="password" name="token" autocomplete="off" required
                    placeholder="bft_…" data-testid="token"/>
                <button type="submit" class="btn primary" data-testid="sign-in"
                    disabled=move || action.pending().get()>
                    {move || if action.pending().get() { "Signing in…" } else { "Sign in" }}
                </button>
            </ActionForm>
            {move || action.value().get().and_then(Result::err).map(|e| view! {
                <p class="form-error" role="alert" data-testid="login-error">{error_text(&e)}</p>
            })}
        </section>
    }
}

#[component]
pub fn SignOut() -> impl IntoView {
    let action = ServerAction::<Logout>::new();
    view! {
        <ActionForm action=action attr:class="logout">
            <button type="submit" class="btn ghost small">"Sign out"</button>
        </ActionForm>
    }
}
