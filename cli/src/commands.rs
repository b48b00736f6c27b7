//! The client commands.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bifrost_api::{
    ChaosIn, CreatedDeployment, DeadLetterOut, DeploymentDetail, DeploymentOut, ProjectOut, Redriven, SecretOut,
    TokenOut,
};
use bifrost_core::config;
use bifrost_gcp::gke;
use reqwest::Method;
use serde_json::{Value, json};

use crate::archive;
use crate::client::{Api, CliError, CliResult, Exit, save_token};
use crate::output::seg;
use crate::output::{self, bold, dim, s};

type Res = CliResult<ExitCode>;

fn ok() -> Res {
    Ok(ExitCode::SUCCESS)
}

/// Where `bifrost render` puts an app.
#[derive(clap::Args, Debug)]
pub struct RenderArgs {
    /// The deploy.toml (default: ./deploy.toml).
    pub file: Option<PathBuf>,
    /// What to render: `gke`, an app's objects from its deploy.toml;
    /// `gke-router`, the router cluster that fronts every app (no file).
    #[arg(long, value_enum, default_value = "gke")]
    pub target: RenderTarget,
    /// gke-router: the gateway the routers follow (the Cloud Run gateway's URL).
    #[arg(long, default_value = "https://bifrost-gateway.example.run.app")]
    pub gateway: String,
    /// gke-router: gossip is heard only from these CIDRs (the pod range).
    #[arg(long = "allowed-address-space", default_value = "10.0.0.0/8")]
    pub allowed_address_space: Vec<String>,
    /// gke-router: replicas (the HPA's bounds).
    #[arg(long, default_value_t = 3)]
    pub min_replicas: i32,
    #[arg(long, default_value_t = 10)]
    pub max_replicas: i32,
    /// Project name (default: app.name).
    #[arg(long)]
    pub project: Option<String>,
    #[arg(long, default_value = "apps")]
    pub namespace: String,
    /// The app image (gke-router: the router's), ideally by digest as
    /// Cloud Build pushed it (default: `<project>:local`, `bifrost-router:local`).
    #[arg(long)]
    pub image: Option<String>,
    #[arg(long, default_value = "bifrost-sidecar:local")]
    pub sidecar_image: String,
    /// Apps are served at `<project>.<domain>`.
    #[arg(long, default_value = "apps.example.com")]
    pub domain: String,
    /// The platform's sidecar ingest (gRPC).
    #[arg(long, default_value = "http://bifrost-ingest.bifrost.svc:7481")]
    pub ingest_url: String,
    /// The deployment id to label the objects with.
    #[arg(long, default_value = "render")]
    pub deployment: String,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum RenderTarget {
    Gke,
    GkeRouter,
}

/// `bifrost render --target gke-router`.
fn render_router(args: &RenderArgs, json: bool) -> Res {
    use bifrost_gcp::gke_router;
    if args.min_replicas < 2 || args.max_replicas < args.min_replicas {
        return Err(CliError::new(
            Exit::Error,
            format!(
                "--min-replicas {} / --max-replicas {}: a cluster needs at least 2 routers (3 recommended: a majority survives one), and max ≥ min",
                args.min_replicas, args.max_replicas
            ),
        ));
    }
    for cidr in &args.allowed_address_space {
        let valid =
            cidr.split_once('/').is_some_and(|(ip, bits)| match (ip.parse::<std::net::IpAddr>(), bits.parse::<u8>()) {
                (Ok(std::net::IpAddr::V4(_)), Ok(b)) => b <= 32,
                (Ok(std::net::IpAddr::V6(_)), Ok(b)) => b <= 128,
                _ => false,
            });
        if !valid {
            return Err(CliError::new(Exit::Error, format!("--allowed-address-space {cidr:?} is not a CIDR range")));
        }
    }
    let t = gke_router::RouterTarget {
        namespace: args.namespace.clone(),
        image: args.image.clone().unwrap_or_else(|| "bifrost-router:local".into()),
        domain: args.domain.clone(),
        gateway: args.gateway.clone(),
        allowed_address_space: args.allowed_address_space.clone(),
        min_replicas: args.min_replicas,
        max_replicas: args.max_replicas,
    };
    let m = gke_router::render(&t);
    if json {
        output::print_json(&serde_json::Value::Array(m.objects()));
    } else {
        print!("{}", m.to_yaml().map_err(|e| CliError::new(Exit::Error, e))?);
    }
    ok()
}

/// `bifrost render`: deploy.toml → the cluster's objects. Invalid files get
/// the same errors as `bifrost validate` (exit 3) and print no YAML.
pub fn render(args: &RenderArgs, json: bool) -> Res {
    if let RenderTarget::GkeRouter = args.target {
        return render_router(args, json);
    }
    let path = args.file.clone().unwrap_or_else(|| PathBuf::from("deploy.toml"));
    let text = std::fs::read_to_string(&path)
        .map_err(|e| CliError::new(Exit::Error, format!("cannot read {}: {e}", path.display())))?;
    let config = match config::parse(&text) {
        Ok(c) => c,
        Err(errors) => {
            eprint!("{}", config::render_errors(&text, &errors, &path.display().to_string()));
            return Err(CliError::new(
                Exit::Invalid,
                format!("{} error(s) in {}; nothing rendered", errors.len(), path.display()),
            ));
        }
    };
    let project = args.project.clone().unwrap_or_else(|| config.app.name.clone());
    if !bifrost_core::domain::is_dns_label(&project) {
        return Err(CliError::new(Exit::Error, format!("--project {project:?} must be a DNS label")));
    }
    let target = gke::GkeTarget {
        image: args.image.clone().unwrap_or_else(|| format!("{project}:local")),
        project,
        namespace: args.namespace.clone(),
        sidecar_image: args.sidecar_image.clone(),
        domain: args.domain.clone(),
        ingest_url: args.ingest_url.clone(),
        deployment_id: args.deployment.clone(),
    };
    let manifests = gke::render(&config, &target);
    if json {
        output::print_json(&serde_json::Value::Array(manifests.objects()));
    } else {
        print!("{}", manifests.to_yaml().map_err(|e| CliError::new(Exit::Error, e))?);
    }
    ok()
}

pub fn validate(file: Option<PathBuf>, schema: bool, explain: bool, json: bool) -> Res {
    if schema {
        output::print_json(&config::json_schema());
        return ok();
    }
    let path = file.unwrap_or_else(|| PathBuf::from("deploy.toml"));
    let text = std::fs::read_to_string(&path)
        .map_err(|e| CliError::new(Exit::Error, format!("cannot read {}: {e}", path.display())))?;
    let result = config::parse(&text);
    if let (true, Ok(c)) = (explain, &result) {
        let explained = config::explain(&text, c);
        if json {
            output::print_json(&json!({"valid": true, "config": explained}));
        } else {
            print!("{}", explain_text(&explained));
        }
        return ok();
    }
    if json {
        let errors = result.as_ref().err().cloned().unwrap_or_default();
        output::print_json(&json!({"valid": result.is_ok(), "errors": errors}));
    } else {
        match &result {
            Ok(c) => println!(
                "{} {} is valid: app {} ({}), {}-{} replicas, health {} every {}",
                console::style("✓").green().bold(),
                path.display(),
                c.app.name,
                c.app.runtime,
                c.scaling.min_replicas,
                c.scaling.max_replicas,
                c.health.path,
                c.health.interval
            ),
            Err(errors) => {
                eprint!("{}", config::render_errors(&text, errors, &path.display().to_string()));
                eprintln!("{} {} error(s) in {}", console::style("✗").red().bold(), errors.len(), path.display());
            }
        }
    }
    Ok(if result.is_ok() { ExitCode::SUCCESS } else { ExitCode::from(Exit::Invalid as u8) })
}

/// The effective config as TOML, sections in order, defaults commented.
fn explain_text(explained: &[config::Explained]) -> String {
    let mut out = String::new();
    let mut section = "";
    for e in explained {
        let (s, key) = e.key.split_once('.').unwrap_or(("", &e.key));
        if s != section {
            out.push_str(&format!("{}[{s}]\n", if section.is_empty() { "" } else { "\n" }));
            section = s;
        }
        // An unset option has no TOML spelling: shown as a comment.
        let line = if e.value == "none" { format!("# {key} (unset)") } else { format!("{key} = {}", e.value) };
        if e.set {
            out.push_str(&format!("{line}\n"));
        } else {
            let note = format!("# default: {}", e.default);
            out.push_str(&format!("{line:<28} {}\n", console::style(note).dim()));
        }
    }
    out
}

pub async fn login(server: &str, token: &str) -> Res {
    let api = Api::new(server, Some(token.to_string()))?;
    let me: Value = api.get("/api/v1/whoami").await?;
    let path = save_token(server, Some(token))
        .map_err(|e| CliError::new(Exit::Error, format!("cannot save the token: {e}")))?;
    println!("logged in to {server} as {} ({}); token saved to {}", s(&me, "name"), s(&me, "role"), path.display());
    ok()
}

pub fn logout(server: &str) -> Res {
    save_token(server, None).map_err(|e| CliError::new(Exit::Error, format!("cannot update credentials: {e}")))?;
    println!("forgot the token for {server}");
    ok()
}

/// A local path becomes absolute (the platform resolves it on its machine).
fn normalize_repo(repo: String) -> String {
    let looks_remote = repo.contains("://") || repo.split_once(':').is_some_and(|(h, _)| h.contains('@'));
    if looks_remote {
        return repo;
    }
    std::fs::canonicalize(&repo).map(|p| p.display().to_string()).unwrap_or(repo)
}

pub async fn projects_add(
    api: &Api,
    json: bool,
    name: &str,
    repo: Option<String>,
    branch: Option<String>,
    webhook_secret: Option<String>,
) -> Res {
    // No --branch: the platform takes the branch the repository's HEAD names.
    let body =
        json!({"name": name, "repo": repo.map(normalize_repo), "branch": branch, "webhook_secret": webhook_secret});
    let p: ProjectOut = api.post("/api/v1/projects", &body).await?;
    if json {
        output::print_json(&p);
        return ok();
    }
    println!("{} project {}", console::style("✓").green().bold(), bold(&p.name));
    if let Some(repo) = &p.repo {
        println!("  repo            {repo} (branch {})", p.branch);
        println!("  webhook URL     {}", p.webhook_url);
        println!("  webhook secret  {}   {}", p.webhook_secret.as_deref().unwrap_or(""), dim("(shown once)"));
        println!(
            "{}",
            dim(
                "  GitHub: Settings → Webhooks → Add: the URL above, content type application/json, this secret, push events."
            )
        );
    } else {
        println!("  no repo: deploy uploads with `bifrost deploy PATH --project {}`", p.name);
    }
    ok()
}

pub async fn projects_list(api: &Api, json: bool) -> Res {
    let empty = "no projects yet: bifrost projects add NAME --repo REPO, or bifrost deploy PATH";
    list(api, "/api/v1/projects", json, empty, &["name", "repo", "branch", "live"], |p: &ProjectOut| {
        vec![
            p.name.clone(),
            p.repo.clone().unwrap_or_else(|| "(uploads)".into()),
            p.branch.clone(),
            p.live_deployment_id.clone().unwrap_or_else(|| "-".into()),
        ]
    })
    .await?;
    ok()
}

pub async fn projects_show(api: &Api, json: bool, name: &str) -> Res {
    let p: ProjectOut = api.get(&format!("/api/v1/projects/{name}")).await?;
    if json {
        output::print_json(&p);
        return ok();
    }
    println!("{} {}", bold("project"), p.name);
    println!("  id        {}", p.id);
    println!("  repo      {}", p.repo.as_deref().unwrap_or("(uploads)"));
    println!("  branch    {}", p.branch);
    println!("  live      {}", p.live_deployment_id.as_deref().unwrap_or("-"));
    println!("  webhook   {}", p.webhook_url);
    if let Some(c) = p.chaos.as_ref().filter(|c| c.active) {
        println!("  {}     {} (by {})", console::style("chaos").yellow().bold(), c.summary, c.set_by);
    }
    if let Some(sp) = &p.split {
        println!(
            "  {}     {}% of clients to {} (by {}, {})",
            console::style("split").cyan().bold(),
            sp.weight,
            sp.deployment,
            sp.set_by,
            output::when(&sp.at)
        );
    }
    if let Some(r) = &p.rollout {
        println!("  {}   {}", console::style("canary").magenta().bold(), rollout_line(r));
    }
    ok()
}

/// One line for a canary rollout: step, weight, paused, last decision.
pub fn rollout_line(r: &bifrost_api::RolloutOut) -> String {
    let mut line = format!("{} at step {} ({}% of clients) against {}", r.deployment, r.step, r.weight, r.stable);
    if let Some(p) = &r.paused {
        line.push_str(&format!(" — PAUSED: {}", output::term_safe(p)));
    }
    if let Some(d) = &r.last_decision {
        line.push_str(&format!("; last: {}", output::term_safe(d)));
    }
    line
}

/// `bifrost rollout promote|abort APP`.
pub async fn rollout(api: &Api, json: bool, project: &str, action: &str) -> Res {
    let p: ProjectOut =
        api.post(&format!("/api/v1/projects/{project}/rollout/{action}"), &serde_json::json!({})).await?;
    if json {
        output::print_json(&p);
    } else if action == "promote" {
        println!("{} {}: the canary takes its next step", console::style("✓").green(), bold(&p.name));
    } else {
        println!(
            "{} {}: canary aborted; every client on {}",
            console::style("✓").green(),
            bold(&p.name),
            p.live_deployment_id.as_deref().unwrap_or("-")
        );
    }
    ok()
}

pub async fn projects_rm(api: &Api, json: bool, name: &str, yes: bool) -> Res {
    if !yes {
        if !std::io::stdin().is_terminal() {
            return Err(CliError::new(
                Exit::Error,
                format!("refusing to delete {name} without --yes (stdin is not a terminal)"),
            ));
        }
        eprint!("Delete project {name} and cancel its deployments? [y/N] ");
        let mut answer = String::new();
        let _ = std::io::stdin().read_line(&mut answer);
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            eprintln!("not deleted");
            return ok();
        }
    }
    let p: ProjectOut = api.delete(&format!("/api/v1/projects/{name}")).await?;
    if json {
        output::print_json(&p);
    } else {
        println!("deleted project {}", p.name);
    }
    ok()
}

pub async fn deploy(
    api: &Api,
    json: bool,
    path: Option<PathBuf>,
    project: Option<String>,
    git_ref: Option<String>,
    wait: bool,
) -> Res {
    let created: CreatedDeployment = match git_ref {
        Some(r) => {
            let project = project.ok_or_else(|| CliError::new(Exit::Error, "--ref needs --project"))?;
            api.post(&format!("/api/v1/projects/{project}/deployments"), &json!({"ref": r})).await?
        }
        None => upload(api, json, path.unwrap_or_else(|| PathBuf::from(".")), project).await?,
    };
    let d = &created.deployment;
    let id = d.id.clone();
    if !json {
        println!(
            "{} deployment {} of {} ({})",
            console::style("→").cyan(),
            bold(&id),
            d.project,
            output::source_label(&d.source)
        );
        if !created.superseded.is_empty() {
            println!("  superseded {}", created.superseded.join(", "));
        }
    }
    if !wait {
        if json {
            output::print_json(&created);
        } else {
            println!("{}", dim(&format!("  follow it: bifrost status {id}")));
        }
        return ok();
    }
    finish_wait(api, json, &id).await
}

/// Packs and uploads a directory; creates the project when it does not exist.
async fn upload(api: &Api, json: bool, dir: PathBuf, project: Option<String>) -> CliResult<CreatedDeployment> {
    let config_path = dir.join("deploy.toml");
    let text = std::fs::read_to_string(&config_path).map_err(|e| {
        CliError::new(
            Exit::Error,
            format!(
                "cannot read {}: {e} (bifrost deploy uploads a directory with a deploy.toml)",
                config_path.display()
            ),
        )
    })?;
    let cfg = config::parse(&text).map_err(|errors| {
        eprint!("{}", config::render_errors(&text, &errors, &config_path.display().to_string()));
        CliError::new(
            Exit::Invalid,
            format!("{} has {} error(s); nothing was uploaded", config_path.display(), errors.len()),
        )
    })?;
    let project = project.unwrap_or(cfg.app.name.clone());
    ensure_project(api, json, &project).await?;
    let packed = archive::pack(&dir).map_err(CliError::from)?;
    if !json {
        eprintln!(
            "{}",
            dim(&format!(
                "  uploading {} files ({} KiB) from {}",
                packed.files,
                packed.bytes.len() / 1024,
                dir.display()
            ))
        );
    }
    let rb = api
        .request(Method::POST, &format!("/api/v1/projects/{project}/deployments"))
        .header("content-type", "application/gzip")
        .body(packed.bytes);
    api.send(rb).await
}

async fn ensure_project(api: &Api, json: bool, project: &str) -> CliResult<()> {
    match api.get::<ProjectOut>(&format!("/api/v1/projects/{project}")).await {
        Ok(_) => Ok(()),
        Err(e) if e.exit == Exit::NotFound => {
            let _: ProjectOut = api.post("/api/v1/projects", &json!({"name": project})).await.map_err(|e| {
                CliError::new(
                    e.exit,
                    format!("project {project} does not exist and could not be created: {}", e.message),
                )
            })?;
            if !json {
                eprintln!("{}", dim(&format!("  created project {project} (uploads only)")));
            }
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// A policy decision a step was taken on, as seed 003's `[PASS]` / `[DENY]`
/// / `[BLOCKED]` lines.
fn gate_lines(h: &bifrost_api::TransitionOut) -> Vec<String> {
    let Some(ev) = &h.evidence else { return vec![] };
    let (Some(gate), Some(allow)) = (ev["gate"].as_str(), ev["allow"].as_bool()) else { return vec![] };
    let deny: Vec<String> = ev["deny"]
        .as_array()
        .map(|a| a.iter().filter_map(|d| d.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    crate::policies::decision_lines(gate, allow, &deny, "deployment")
}

/// Follows a deployment until it is healthy or terminal, showing each step.
async fn wait_for(api: &Api, id: &str, json: bool) -> CliResult<DeploymentDetail> {
    let show = !json && std::io::stderr().is_terminal();
    let bar = if show {
        let b = indicatif::ProgressBar::new_spinner();
        b.enable_steady_tick(Duration::from_millis(100));
        b
    } else {
        indicatif::ProgressBar::hidden()
    };
    let started = Instant::now();
    let mut seen = 0usize;
    loop {
        let d: DeploymentDetail = api.get(&format!("/api/v1/deployments/{id}")).await?;
        for h in d.history.iter().skip(seen) {
            let mut lines = vec![format!("  {} {}", output::status(&h.to), dim(&output::term_safe(&h.reason)))];
            lines.extend(gate_lines(h).into_iter().map(|l| format!("      {l}")));
            for line in lines {
                if show {
                    bar.println(line);
                } else if !json {
                    eprintln!("{line}");
                }
            }
        }
        seen = d.history.len();
        let status = d.deployment.status.clone();
        bar.set_message(format!("{status} ({:.0}s)", started.elapsed().as_secs_f64()));
        if matches!(status.as_str(), "healthy" | "failed" | "cancelled" | "superseded") {
            bar.finish_and_clear();
            return Ok(d);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

pub async fn deployments_list(api: &Api, json: bool, project: Option<String>, limit: usize) -> Res {
    let path = match &project {
        Some(p) => format!("/api/v1/projects/{p}/deployments?limit={limit}"),
        None => format!("/api/v1/deployments?limit={limit}"),
    };
    let headers = ["id", "project", "status", "source", "created", "reason"];
    list(api, &path, json, "no deployments yet", &headers, |d: &DeploymentOut| {
        vec![
            d.id.clone(),
            d.project.clone(),
            output::status(&d.status),
            output::source_label(&d.source),
            output::when(&d.created_at),
            output::term_safe(d.reason.as_deref().unwrap_or("")).chars().take(60).collect(),
        ]
    })
    .await?;
    ok()
}

pub async fn status(api: &Api, json: bool, id: &str) -> Res {
    let d: DeploymentDetail = api.get(&format!("/api/v1/deployments/{id}")).await?;
    if json {
        output::print_json(&d);
        return ok();
    }
    output::deployment_detail(&d);
    // What the router does to this deployment's traffic now (the project
    // may be gone: then nothing).
    let project = seg(&d.deployment.project);
    if let Ok(p) = api.get::<ProjectOut>(&format!("/api/v1/projects/{project}")).await {
        let this = d.deployment.id.as_str();
        if let Some(c) = p.chaos.as_ref().filter(|c| c.active && c.deployment.as_deref().is_none_or(|x| x == this)) {
            println!("{}  {} (by {})", console::style("chaos").yellow().bold(), c.summary, c.set_by);
        }
        if let Some(sp) = &p.split {
            let share = if sp.deployment == this {
                Some(sp.weight)
            } else if p.live_deployment_id.as_deref() == Some(this) {
                Some(100 - sp.weight)
            } else {
                None
            };
            if let Some(share) = share {
                println!(
                    "{}  {share}% of clients (traffic split by {})",
                    console::style("split").cyan().bold(),
                    sp.set_by
                );
            }
        }
    }
    ok()
}

pub async fn retry(api: &Api, json: bool, id: &str) -> Res {
    let d: DeploymentOut = api.post(&format!("/api/v1/deployments/{id}/retry"), &json!({})).await?;
    if json {
        output::print_json(&d);
    } else {
        println!("{} queued again (attempt {})", d.id, d.attempt);
    }
    ok()
}

pub async fn cancel(api: &Api, json: bool, id: &str) -> Res {
    let d: DeploymentOut = api.post(&format!("/api/v1/deployments/{id}/cancel"), &json!({})).await?;
    if json {
        output::print_json(&d);
    } else {
        println!("{} {}", d.id, output::status(&d.status));
    }
    ok()
}

pub async fn dead(api: &Api, json: bool, redrive: bool, ids: Vec<String>) -> Res {
    if redrive {
        let body = if ids.is_empty() { json!({}) } else { json!({"ids": ids}) };
        let r: Redriven = api.post("/api/v1/events/dead/redrive", &body).await?;
        if json {
            output::print_json(&r);
        } else {
            println!("redriven: {}", r.redriven);
        }
        return ok();
    }
    let headers = ["id", "event", "deployment", "attempts", "last error"];
    let shown = list(api, "/api/v1/events/dead", json, "no dead letters", &headers, |d: &DeadLetterOut| {
        vec![
            d.id.clone(),
            d.event.kind.clone(),
            d.event.deployment_id.clone(),
            d.attempts.to_string(),
            output::term_safe(&d.last_error).chars().take(70).collect(),
        ]
    })
    .await?;
    if shown > 0 && !json {
        println!("{}", dim("redrive with: bifrost events dead --redrive [ID...]"));
    }
    ok()
}

pub async fn tokens_create(api: &Api, json: bool, name: &str, role: &str, project: Option<&str>) -> Res {
    let t: TokenOut = api.post("/api/v1/tokens", &json!({"name": name, "role": role, "project": project})).await?;
    if json {
        output::print_json(&t);
    } else {
        let scope = t.project.as_deref().map(|p| format!(", project {p} only")).unwrap_or_default();
        println!("token {} ({}{scope}) — shown only this once:", t.name, t.role);
        println!("{}", t.token.as_deref().unwrap_or(""));
    }
    ok()
}

pub async fn tokens_list(api: &Api, json: bool) -> Res {
    let empty = "no tokens: bifrost tokens create NAME --role ROLE";
    list(api, "/api/v1/tokens", json, empty, &["name", "role", "project", "created", "last used"], |t: &TokenOut| {
        vec![
            t.name.clone(),
            t.role.clone(),
            t.project.clone().unwrap_or_else(|| "all".into()),
            output::when(&t.created_at),
            t.last_used_at.as_deref().map(output::when).unwrap_or_else(|| "never".into()),
        ]
    })
    .await?;
    ok()
}

pub async fn tokens_revoke(api: &Api, json: bool, name: &str) -> Res {
    let t: TokenOut = api.delete(&format!("/api/v1/tokens/{name}")).await?;
    if json {
        output::print_json(&t);
    } else {
        println!("revoked token {}", t.name);
    }
    ok()
}

pub async fn logs(api: &Api, json: bool, id: &str, follow: bool) -> Res {
    if follow {
        crate::follow::follow(api, id, json, |_| false).await?;
        return ok();
    }
    let items: Vec<Value> = api.get(&format!("/api/v1/deployments/{id}/logs")).await?;
    for item in &items {
        if json {
            println!("{item}");
        } else {
            crate::follow::print_item(item);
        }
    }
    ok()
}

pub async fn open(api: &Api, json: bool, app: &str, print_only: bool) -> Res {
    let p: ProjectOut = api.get(&format!("/api/v1/projects/{app}")).await?;
    let url = p.url.clone();
    if json {
        output::print_json(&json!({"app": app, "url": url, "live_deployment_id": p.live_deployment_id}));
        return ok();
    }
    println!("{url}");
    if p.live_deployment_id.is_none() {
        eprintln!("{}", dim("(no live deployment yet: the URL answers 404 until one is healthy)"));
    }
    let desktop = std::env::var_os("DISPLAY").is_some() || std::env::var_os("WAYLAND_DISPLAY").is_some();
    if !print_only && desktop && std::io::stdout().is_terminal() {
        let _ = std::process::Command::new("xdg-open")
            .arg(&url)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
    }
    ok()
}

pub async fn rollback(api: &Api, json: bool, project: &str, to: Option<String>, wait: bool) -> Res {
    let created: CreatedDeployment =
        api.post(&format!("/api/v1/projects/{project}/rollback"), &json!({"to": to})).await?;
    let d = &created.deployment;
    let id = d.id.clone();
    if !json {
        println!(
            "{} rollback {} of {} to {}",
            console::style("→").cyan(),
            bold(&id),
            d.project,
            d.rollback_of.as_deref().unwrap_or("")
        );
    }
    if !wait {
        if json {
            output::print_json(&created);
        }
        return ok();
    }
    finish_wait(api, json, &id).await
}

/// `--wait`: follow until healthy (exit 0) or finished otherwise (exit 4).
async fn finish_wait(api: &Api, json: bool, id: &str) -> Res {
    let last = wait_for(api, id, json).await?;
    let status = last.deployment.status.as_str();
    if json {
        output::print_json(&last);
    }
    if status == "healthy" {
        if !json {
            let p: ProjectOut = api.get(&format!("/api/v1/projects/{}", last.deployment.project)).await?;
            println!("{} live at {}", console::style("✓").green().bold(), p.url);
        }
        return Ok(ExitCode::SUCCESS);
    }
    if !json {
        output::config_errors(&last.deployment.config_errors);
    }
    Err(CliError::new(
        Exit::DeployFailed,
        format!(
            "deployment {id} ended {status}: {}",
            output::term_safe(last.deployment.reason.as_deref().unwrap_or("no reason given"))
        ),
    ))
}

fn secret_path(project: &str, name: &str) -> String {
    format!("/api/v1/projects/{}/secrets/{}", seg(project), seg(name))
}

pub async fn secrets_set(api: &Api, project: &str, name: &str, value: Option<String>) -> Res {
    let value = match value {
        Some(v) => v,
        None => {
            let mut v = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut v)
                .map_err(|e| CliError::new(Exit::Error, format!("reading the value from stdin: {e}")))?;
            v.trim_end_matches(['\n', '\r']).to_string()
        }
    };
    let rb = api.request(Method::PUT, &secret_path(project, name)).json(&json!({"value": value}));
    let resp = rb.send().await.map_err(|e| CliError::new(Exit::Error, format!("cannot reach {}: {e}", api.server)))?;
    if !resp.status().is_success() {
        let status = resp.status();
        return Err(crate::client::api_error(status, &resp.bytes().await.unwrap_or_default()));
    }
    println!("secret {name} set for project {project} (stored sealed)");
    ok()
}

pub async fn secrets_list(api: &Api, json: bool, project: Option<&str>) -> Res {
    match project {
        Some(p) => {
            let empty = format!("no secrets in {p}: bifrost secrets set NAME --project {p}");
            let path = format!("/api/v1/projects/{}/secrets", seg(p));
            list(api, &path, json, &empty, &["name", "updated"], |x: &SecretOut| {
                vec![x.name.clone(), output::when(&x.updated_at)]
            })
            .await?;
        }
        None => {
            let empty = "no secrets: bifrost secrets set NAME --project PROJECT";
            list(api, "/api/v1/secrets", json, empty, &["project", "name", "updated"], |x: &SecretOut| {
                let project = x.project.as_deref().unwrap_or("(none: unused, set it again with --project)");
                vec![project.to_string(), x.name.clone(), output::when(&x.updated_at)]
            })
            .await?;
        }
    }
    ok()
}

pub async fn secrets_rm(api: &Api, project: &str, name: &str) -> Res {
    let resp = api
        .request(Method::DELETE, &secret_path(project, name))
        .send()
        .await
        .map_err(|e| CliError::new(Exit::Error, format!("cannot reach {}: {e}", api.server)))?;
    if !resp.status().is_success() {
        let status = resp.status();
        return Err(crate::client::api_error(status, &resp.bytes().await.unwrap_or_default()));
    }
    println!("secret {name} deleted from project {project}");
    ok()
}

/// A list command: GET `path` and print it as JSON, as a table (one row per
/// item), or `empty` when there is nothing. Returns how many items there were.
async fn list<T: serde::de::DeserializeOwned + serde::Serialize>(
    api: &Api,
    path: &str,
    json: bool,
    empty: &str,
    headers: &[&str],
    row: impl Fn(&T) -> Vec<String>,
) -> CliResult<usize> {
    let items: Vec<T> = api.get(path).await?;
    if json {
        output::print_json(&items);
    } else if items.is_empty() {
        println!("{empty}");
    } else {
        output::table(headers, items.iter().map(row).collect());
    }
    Ok(items.len())
}

/// `bifrost chaos`'s fault, as given on the command line.
pub struct ChaosArgs {
    pub deployment: Option<String>,
    pub error_rate: Option<f64>,
    pub status: Option<u16>,
    pub delay: Option<String>,
    pub rate: Option<f64>,
    pub for_: Option<String>,
}

/// `bifrost chaos APP …` (`None`: `--recover`).
pub async fn chaos(api: &Api, json: bool, project: &str, fault: Option<ChaosArgs>) -> Res {
    let duration = |flag: &str, v: &str| {
        bifrost_core::config::values::parse_duration(v)
            .map_err(|e| CliError::new(Exit::Error, format!("{flag} {v:?}: expected {e}")))
    };
    let p: ProjectOut = match fault {
        None => api.delete(&format!("/api/v1/projects/{project}/chaos")).await?,
        Some(f) => {
            let body = ChaosIn {
                deployment: f.deployment,
                error_rate: f.error_rate,
                status: f.status,
                delay_ms: f.delay.as_deref().map(|d| duration("--delay", d)).transpose()?.map(|d| d.millis),
                rate: f.rate,
                for_s: f.for_.as_deref().map(|d| duration("--for", d)).transpose()?.map(|d| d.millis.div_ceil(1000)),
            };
            api.put(&format!("/api/v1/projects/{project}/chaos"), &body).await?
        }
    };
    if json {
        output::print_json(&p);
    } else {
        match &p.chaos {
            Some(c) => println!("{} chaos on {}: {}", console::style("!").yellow(), bold(&p.name), c.summary),
            None => println!("{} chaos off for {}", console::style("✓").green(), bold(&p.name)),
        }
    }
    ok()
}

/// `bifrost traffic split APP --to D --weight W` / `bifrost traffic reset APP`.
pub async fn traffic(api: &Api, json: bool, project: &str, split: Option<(String, u8)>) -> Res {
    let p: ProjectOut = match split {
        Some((to, weight)) => {
            if !json {
                eprintln!("{} starting {to}'s replicas if they do not run…", dim("…"));
            }
            api.put(&format!("/api/v1/projects/{project}/split"), &bifrost_api::SplitIn { to, weight }).await?
        }
        None => api.delete(&format!("/api/v1/projects/{project}/split")).await?,
    };
    if json {
        output::print_json(&p);
    } else {
        match &p.split {
            Some(sp) => println!(
                "{} {}: {}% of clients to {}, the rest to {} (sticky per client)",
                console::style("✓").green(),
                bold(&p.name),
                sp.weight,
                sp.deployment,
                p.live_deployment_id.as_deref().unwrap_or("-")
            ),
            None => println!("{} {}: every client on the live deployment", console::style("✓").green(), bold(&p.name)),
        }
    }
    ok()
}
