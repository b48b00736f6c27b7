//! One deployment, live: the pipeline with the time spent in each step,
//! deploy.toml errors at their line, the build and runtime log, health
//! charts from the sidecars, replicas, the audit trail, and actions.

use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::components::A;
use leptos_router::hooks::use_params_map;

use crate::components::chart::{Chart, Point};
use crate::components::log::LogView;
use crate::components::pipeline::Pipeline;
use crate::components::{ConfirmButton, ErrorState, Loading, StatusBadge, error_text};
use crate::live::{LiveBadge, use_feed};
use crate::model::{DeploymentPage as Page, HealthPoint, LogLine, Transition, clock, epoch_ms, short_id};

#[server(prefix = "/ui/api", endpoint = "deployment")]
pub async fn deployment_page(id: String) -> Result<Page, ServerFnError> {
    use crate::server::{Session, convert, seg};
    use bifrost_api::{DeploymentDetail, HealthSampleOut, ProjectOut, ReplicaOut};
    use serde_json::Value;
    let s = Session::current()?;
    let i = seg(&id);
    // The feed first, the deployment (with its history) after: a transition
    // committed in between is then in the history *and* replayed live after
    // the feed's last seq (the live handler drops the repeat), instead of in
    // neither (seen in CI under load: a pipeline step stuck at pending).
    let feed = s.get::<Value>(format!("/api/v1/deployments/{i}/logs")).await?;
    let (me, d, health, replicas, traffic) = futures::try_join!(
        s.me(),
        s.get::<DeploymentDetail>(format!("/api/v1/deployments/{i}")),
        s.get::<Vec<HealthSampleOut>>(format!("/api/v1/deployments/{i}/health")),
        s.get::<Vec<ReplicaOut>>(format!("/api/v1/deployments/{i}/replicas")),
        s.get::<Vec<bifrost_api::TrafficPointOut>>(format!("/api/v1/deployments/{i}/traffic")),
    )?;
    let deployment = convert::deployment(&d.deployment);
    // A deleted project's deployments still show, without a URL.
    let project: Option<ProjectOut> = s.get(&format!("/api/v1/projects/{}", seg(&deployment.project))).await.ok();
    let items = feed.as_array().cloned().unwrap_or_default();
    let last_seq = items.iter().filter_map(|v| v.get("seq").and_then(Value::as_u64)).max().unwrap_or(0);
    let logs = items
        .iter()
        .filter(|v| v.get("kind").and_then(Value::as_str) == Some("log"))
        .map(|v| LogLine {
            seq: v.get("seq").and_then(Value::as_u64).unwrap_or_default(),
            stream: v.get("stream").and_then(Value::as_str).unwrap_or_default().to_string(),
            line: v.get("line").and_then(Value::as_str).unwrap_or_default().to_string(),
        })
        .collect();
    let rollout = crate::server::rollout::view(&s, &d, project.as_ref()).await?.map(|r| r.active);
    // The analytics runs' anomalies of the last day mark the charts (none
    // when analytics is off or the project is gone).
    let anomalies = s
        .get::<Value>(format!("/api/v1/analytics/projects/{}/anomalies?days=1", seg(&deployment.project)))
        .await
        .map(|a| convert::markers(&a))
        .unwrap_or_default();
    Ok(Page {
        me,
        url: project.map(|p| p.url).unwrap_or_default(),
        config_errors: d.deployment.config_errors.iter().map(convert::config_error).collect(),
        config_source: d.deployment.config_source.clone(),
        history: d.history.iter().map(convert::transition).collect(),
        logs,
        last_seq,
        health: health.iter().filter_map(convert::health).collect(),
        traffic: traffic.iter().filter_map(convert::traffic_point).collect(),
        replicas: replicas.iter().map(convert::replica).collect(),
        degraded: d.degraded.clone().unwrap_or_default(),
        rollout,
        anomalies,
        deployment,
    })
}

/// The router's recent intervals of a deployment (the charts refresh).
#[server(prefix = "/ui/api", endpoint = "deployment-traffic")]
pub async fn deployment_traffic(id: String) -> Result<Vec<crate::model::TrafficPoint>, ServerFnError> {
    use crate::server::{Session, convert, seg};
    let s = Session::current()?;
    let t: Vec<bifrost_api::TrafficPointOut> = s.get(&format!("/api/v1/deployments/{}/traffic", seg(&id))).await?;
    Ok(t.iter().filter_map(convert::traffic_point).collect())
}

#[server(prefix = "/ui/api", endpoint = "retry")]
pub async fn retry(id: String) -> Result<String, ServerFnError> {
    let s = crate::server::Session::current()?;
    s.require("deployer", "retrying").await?;
    let path = format!("/api/v1/deployments/{}/retry", crate::server::seg(&id));
    let d: bifrost_api::DeploymentOut = s.send(axum::http::Method::POST, &path, serde_json::json!({})).await?;
    Ok(d.status)
}

#[server(prefix = "/ui/api", endpoint = "cancel")]
pub async fn cancel(id: String) -> Result<String, ServerFnError> {
    let s = crate::server::Session::current()?;
    s.require("deployer", "cancelling").await?;
    let path = format!("/api/v1/deployments/{}/cancel", crate::server::seg(&id));
    let d: bifrost_api::DeploymentOut = s.send(axum::http::Method::POST, &path, serde_json::json!({})).await?;
    Ok(d.status)
}

#[component]
pub fn DeploymentPage() -> impl IntoView {
    let params = use_params_map();
    let id = move || params.read().get("id").unwrap_or_default();
    let data = Resource::new(id, deployment_page);
    view! {
        <Suspense fallback=|| view! { <Loading what="the deployment"/> }>
            {move || Suspend::new(async move {
                match data.await {
                    Ok(page) => view! { <DeploymentView page/> }.into_any(),
                    Err(e) => view! { <ErrorState error=e/> }.into_any(),
                }
            })}
        </Suspense>
    }
}

fn points(health: &[HealthPoint], pick: impl Fn(&HealthPoint) -> Option<f64>) -> Vec<Point> {
    health.iter().filter_map(|h| pick(h).map(|value| Point { replica: h.replica, at_ms: h.at_ms, value })).collect()
}

#[component]
fn DeploymentView(page: Page) -> impl IntoView {
    let d = page.deployment.clone();
    let id = d.id.clone();
    let (status, set_status) = signal(d.status.clone());
    let (reason, set_reason) = signal(d.reason.clone().unwrap_or_default());
    let (history, set_history) = signal(page.history.clone());
    let (logs, set_logs) = signal(page.logs.clone());
    let (health, set_health) = signal(page.health.clone());
    let (traffic, set_traffic) = signal(page.traffic.clone());
    let (now, set_now) = signal(super::now_ms());
    // Live events resume after what the page was rendered with; anything at
    // or below the newest seq shown is a replay and is dropped.
    let seen = StoredValue::new(page.last_seq);
    let conn = use_feed(
        format!("/ui/events/{}?after={}", crate::model::seg(&id), page.last_seq),
        move |kind, ev| {
            if kind == "health" {
                if let Some(at_ms) = epoch_ms(&ev.at) {
                    set_health.update(|h| {
                        h.push(HealthPoint {
                            replica: ev.replica.unwrap_or_default(),
                            at_ms,
                            probe_ok: ev.probe_ok.unwrap_or_default(),
                            latency_ms: ev.latency_ms,
                            cpu_percent: ev.cpu_percent,
                            rss_bytes: ev.rss_bytes,
                        });
                        // An hour of one-second reports per replica at most.
                        let excess = h.len().saturating_sub(20_000);
                        h.drain(..excess);
                    });
                }
                return;
            }
            if ev.seq <= seen.get_value() {
                return;
            }
            seen.set_value(ev.seq);
            match kind {
                "status" => {
                    let to = ev.status.clone().unwrap_or_default();
                    set_status.set(to.clone());
                    set_reason.set(ev.reason.clone().unwrap_or_default());
                    set_history.update(|h| {
                        // Already in the rendered history (see deployment_page).
                        if h.iter().any(|t| t.to == to && t.at == ev.at) {
                            return;
                        }
                        h.push(Transition {
                            seq: ev.seq,
                            at: ev.at.clone(),
                            actor: ev.actor.clone().unwrap_or_default(),
                            from: ev.from.clone(),
                            to,
                            reason: ev.reason.clone().unwrap_or_default(),
                        })
                    });
                }
                _ => set_logs.update(|l| {
                    l.push(LogLine {
                        seq: ev.seq,
                        stream: ev.stream.clone().unwrap_or_default(),
                        line: ev.line.clone().unwrap_or_default(),
                    })
                }),
            }
        },
        || {},
    );
    // The current step's clock ticks while the deployment is in flight.
    #[cfg(feature = "hydrate")]
    {
        if let Ok(handle) =
            set_interval_with_handle(move || set_now.set(super::now_ms()), std::time::Duration::from_secs(1))
        {
            on_cleanup(move || handle.clear());
        }
        // The router's numbers come in 5-second intervals: read them again as often.
        let tid = id.clone();
        if let Ok(handle) = set_interval_with_handle(
            move || {
                let tid = tid.clone();
                leptos::task::spawn_local(async move {
                    if let Ok(t) = deployment_traffic(tid).await {
                        set_traffic.set(t);
                    }
                });
            },
            std::time::Duration::from_secs(5),
        ) {
            on_cleanup(move || handle.clear());
        }
    }
    #[cfg(not(feature = "hydrate"))]
    let _ = (set_now, set_traffic);
    let in_flight =
        Signal::derive(move || !matches!(status.get().as_str(), "healthy" | "failed" | "cancelled" | "superseded"));
    let latency = Signal::derive(move || health.with(|h| points(h, |p| p.latency_ms)));
    let cpu = Signal::derive(move || health.with(|h| points(h, |p| p.cpu_percent)));
    let rss = Signal::derive(move || health.with(|h| points(h, |p| p.rss_bytes.map(|b| b as f64 / 1_048_576.0))));
    let traffic_points = |pick: fn(&crate::model::TrafficPoint) -> Option<f64>| {
        Signal::derive(move || {
            traffic.with(|t| {
                t.iter().filter_map(|p| pick(p).map(|value| Point { replica: 0, at_ms: p.at_ms, value })).collect()
            })
        })
    };
    let requests = traffic_points(|p| Some(p.requests_per_s));
    let errors = traffic_points(|p| Some(p.error_pct));
    let p99 = traffic_points(|p| p.p99_ms);
    let can_deploy = page.me.can_deploy();
    let anomalies = page.anomalies.clone();
    let marks = move |series: &str| anomalies.iter().filter(|m| m.series == series).cloned().collect::<Vec<_>>();
    let project_href = format!("/projects/{}", d.project);
    view! {
        <Title text=format!("{} · {} · Bifrost", d.project, short_id(&d.id))/>
        <div class="page-head">
            <h1>
                <A href=project_href>{d.project.clone()}</A>
                " · "<span class="mono">{short_id(&d.id).to_string()}</span>
            </h1>
            <StatusBadge status=status/>
            <LiveBadge conn/>
        </div>
        <dl class="facts">
            <dt>"Source"</dt><dd class="mono">{d.source.label.clone()}</dd>
            <dt>"Attempt"</dt><dd>{d.attempt}</dd>
            <dt>"Created"</dt><dd>{clock(&d.created_at)}" by "{d.created_by.clone()}</dd>
            {d.rollback_of.clone().map(|r| view! {
                <dt>"Rollback of"</dt><dd><A href=format!("/deployments/{r}")>{short_id(&r).to_string()}</A></dd>
            })}
            <dt>"URL"</dt><dd><a href=page.url.clone() target="_blank" rel="noopener">{page.url.clone()}</a></dd>
            <dt>"Why"</dt><dd class="reason" data-testid="reason">{move || reason.get()}</dd>
        </dl>
        {(!page.degraded.is_empty()).then(|| view! {
            <div class="degraded" role="status" data-testid="degraded">
                <strong>"Degraded"</strong>
                " — live, but not every replica is healthy; they keep being restarted. Roll back or deploy a fix."
                <ul>{page.degraded.iter().map(|r| view! { <li class="mono">{r.clone()}</li> }).collect_view()}</ul>
            </div>
        })}
        {can_deploy.then(|| view! { <Actions id=id.clone() status=status/> })}
        <Pipeline history=history status=status now_ms=now/>
        {page.rollout.map(|active| {
            let project = page.deployment.project.clone();
            view! { <super::rollout::RolloutPanel id=id.clone() project active can_deploy/> }
        })}
        <ConfigErrors errors=page.config_errors.clone()/>
        <section>
            <h2>"Log"</h2>
            <LogView lines=logs live=in_flight/>
        </section>
        <section>
            <h2>"Health"</h2>
            <div class="charts">
                <Chart title="Probe latency" unit="ms" points=latency/>
                <Chart title="CPU" unit="%" points=cpu markers=marks("cpu_cores")/>
                <Chart title="Memory" unit="MiB" points=rss markers=marks("rss_mib")/>
            </div>
            <Replicas replicas=page.replicas.clone()/>
        </section>
        <section>
            <h2>"Traffic"</h2>
            <p class="muted">"What the router answered for this deployment, in 5-second intervals (while it serves)."</p>
            <div class="charts">
                <Chart title="Requests" unit="req/s" points=requests empty="No traffic counted yet."
                    markers=marks("requests_per_s")/>
                <Chart title="Errors" unit="%" points=errors empty="No traffic counted yet." markers=marks("error_rate")/>
                <Chart title="p99 latency" unit="ms" points=p99 empty="No traffic counted yet." markers=marks("p99_ms")/>
            </div>
        </section>
        {page.config_source.clone().map(|src| view! {
            <details class="source">
                <summary>"deploy.toml at this commit"</summary>
                <pre class="mono">{src}</pre>
            </details>
        })}
        <section>
            <h2>"Audit trail"</h2>
            <ol class="trail" data-testid="trail">
                <For each=move || history.get() key=|t| t.seq let:t>
                    <li>
                        <span class="nowrap muted">{clock(&t.at)}</span>" "
                        <span class="mono">{t.from.clone().unwrap_or_else(|| "·".into())}" → "{t.to.clone()}</span>" "
                        <span class="actor">{t.actor.clone()}</span>" "
                        <span class="reason">{t.reason.clone()}</span>
                    </li>
                </For>
            </ol>
        </section>
    }
}

#[component]
fn Actions(id: String, status: ReadSignal<String>) -> impl IntoView {
    let retry = ServerAction::<Retry>::new();
    let cancel = ServerAction::<Cancel>::new();
    let (id1, id2) = (id.clone(), id.clone());
    let error =
        move || retry.value().get().and_then(Result::err).or_else(|| cancel.value().get().and_then(Result::err));
    view! {
        <div class="actions" data-testid="actions">
            <Show when=move || matches!(status.get().as_str(), "failed" | "cancelled")>
                {
                    let id = id1.clone();
                    view! {
                        <ConfirmButton label="Retry" name="retry" question="Run this deployment again?"
                            pending=retry.pending()
                            on_confirm=Callback::new(move |_| { retry.dispatch(Retry { id: id.clone() }); })/>
                    }
                }
            </Show>
            <Show when=move || !matches!(status.get().as_str(), "healthy" | "failed" | "cancelled" | "superseded")>
                {
                    let id = id2.clone();
                    view! {
                        <ConfirmButton label="Cancel" name="cancel" danger=true
                            question="Stop this deployment? Its build or replicas are stopped."
                            pending=cancel.pending()
                            on_confirm=Callback::new(move |_| { cancel.dispatch(Cancel { id: id.clone() }); })/>
                    }
                }
            </Show>
            {move || error().map(|e| view! { <p class="form-error" role="alert">{error_text(&e)}</p> })}
        </div>
    }
}

/// deploy.toml errors in place: the line as it was, a caret at the column.
#[component]
fn ConfigErrors(errors: Vec<crate::model::ConfigError>) -> impl IntoView {
    (!errors.is_empty()).then(|| {
        view! {
            <section class="config-errors" data-testid="config-errors">
                <h2>{format!("deploy.toml: {} error{}", errors.len(), if errors.len() == 1 { "" } else { "s" })}</h2>
                {errors.into_iter().map(|e| {
                    let gutter = e.line.to_string();
                    let pad = " ".repeat(e.column.saturating_sub(1) as usize);
                    view! {
                        <div class="config-error">
                            <p><span class="mono">{format!("deploy.toml:{}:{}", e.line, e.column)}</span>" "{e.message.clone()}</p>
                            {e.source_line.clone().map(|src| view! {
                                <pre class="frame"><span class="gutter">{gutter.clone()}" | "</span>{src}"\n"
                                <span class="gutter">{" ".repeat(gutter.len())}" | "</span><span class="caret">{pad.clone()}"^"</span></pre>
                            })}
                            {e.suggestion.clone().map(|s| view! { <p class="hint">"Did you mean "<code>{s}</code>"?"</p> })}
                        </div>
                    }
                }).collect_view()}
            </section>
        }
    })
}

#[component]
fn Replicas(replicas: Vec<crate::model::Replica>) -> impl IntoView {
    (!replicas.is_empty()).then(|| {
        view! {
            <table class="list replicas">
                <thead><tr><th>"Replica"</th><th>"Address"</th><th>"PID"</th><th>"Healthy"</th><th>"Restarts"</th><th>"CPU"</th><th>"Memory"</th></tr></thead>
                <tbody>
                    {replicas.into_iter().map(|r| view! {
                        <tr>
                            <td>{r.index}</td>
                            <td class="mono">{r.address.unwrap_or_default()}</td>
                            <td>{r.pid.map(|p| p.to_string()).unwrap_or_default()}</td>
                            <td>{if r.healthy { "yes" } else { "no" }}</td>
                            <td>{r.restarts}</td>
                            <td>{r.cpu_percent.map(|c| format!("{c:.1} %")).unwrap_or_default()}</td>
                            <td>{r.rss_bytes.map(|b| format!("{:.1} MiB", b as f64 / 1_048_576.0)).unwrap_or_default()}</td>
                        </tr>
                    }).collect_view()}
                </tbody>
            </table>
        }
    })
}
