//! `bifrost`: start the embedded platform (`bifrost up`) or drive any
//! Bifrost from the command line. Exit codes are listed in docs/cli.md.

mod analytics;
mod app_status;
mod archive;
mod audit;
mod client;
mod cluster;
mod commands;
mod follow;
mod output;
mod policies;
mod routes;
mod scripts;
mod serve_static;
mod up;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use client::{Api, CliError};

#[derive(Parser, Debug)]
#[command(name = "bifrost", version, about = "Self-service deployments: push code, get a URL.", long_about = None)]
struct Cli {
    /// The Bifrost to talk to.
    #[arg(long, global = true, env = "BIFROST_SERVER", default_value = "http://127.0.0.1:7070")]
    server: String,
    /// API token (default: the one saved by `bifrost login` / `bifrost up` for this server).
    #[arg(long, global = true, env = "BIFROST_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Start the whole platform on this machine (API, webhook, pipeline).
    Up(up::UpArgs),
    /// Serve a folder over HTTP (what static apps' replicas run).
    #[command(hide = true)]
    ServeStatic(serve_static::ServeStaticArgs),
    /// Save a token for --server, after checking it works.
    Login {
        #[arg(long)]
        token: String,
    },
    /// Forget the saved token for --server.
    Logout,
    /// Manage projects.
    #[command(subcommand)]
    Projects(ProjectsCmd),
    /// Deploy a local directory (uploads it) or a ref of the project's repo.
    Deploy {
        /// Directory to upload (default: the current one). Ignored with --ref.
        path: Option<PathBuf>,
        /// Project (default: app.name from the directory's deploy.toml).
        #[arg(long, short)]
        project: Option<String>,
        /// Deploy this branch, tag or commit of the project's repo instead of uploading.
        #[arg(long = "ref")]
        git_ref: Option<String>,
        /// Wait until the deployment is healthy (exit 0) or ends otherwise (exit 4).
        #[arg(long)]
        wait: bool,
    },
    /// List deployments.
    #[command(subcommand)]
    Deployments(DeploymentsCmd),
    /// An app's live view (live deployment, canary step and weight, per
    /// side req/s, errors, p99, chaos, each gate's last decision), refreshed
    /// every 2 s until Ctrl-C; or, given a deployment id, that deployment:
    /// status, history, errors.
    Status {
        /// An app name, or a deployment id.
        id: String,
        /// One frame, then exit (apps only).
        #[arg(long)]
        once: bool,
    },
    /// Check a deploy.toml; exits 0 only when valid, 3 when not.
    Validate {
        /// The file (default: ./deploy.toml).
        file: Option<PathBuf>,
        /// Print the JSON Schema of deploy.toml instead.
        #[arg(long)]
        schema: bool,
        /// Print the effective configuration: every key's value, defaults marked.
        #[arg(long, conflicts_with = "schema")]
        explain: bool,
    },
    /// Print the objects a deploy.toml becomes on a cluster (YAML), exactly
    /// as the GKE runtime applies them.
    Render(commands::RenderArgs),
    /// Queue a failed or cancelled deployment again (attempt + 1).
    Retry { id: String },
    /// Stop a deployment.
    Cancel { id: String },
    /// Show a deployment's build and replica logs (and status changes).
    Logs {
        id: String,
        /// Keep following new lines (Ctrl-C to stop).
        #[arg(long, short)]
        follow: bool,
    },
    /// Print (and on a desktop, open) an app's URL.
    Open {
        app: String,
        /// Only print the URL.
        #[arg(long)]
        print: bool,
    },
    /// Make an earlier healthy deployment live again (a new deployment of its build).
    Rollback {
        project: String,
        /// The deployment to roll back to (default: the newest earlier healthy one).
        #[arg(long)]
        to: Option<String>,
        /// Wait until it is healthy.
        #[arg(long)]
        wait: bool,
    },
    /// Inject faults into an app's traffic at the router (admin): a share of
    /// requests answered with an error, or delayed. Ends by itself after
    /// --for (default 15m), or at once with --recover.
    #[command(group(clap::ArgGroup::new("fault").required(true).args(["error_rate", "delay", "recover"])))]
    Chaos {
        project: String,
        /// Only this deployment's traffic (default: whatever serves the app).
        #[arg(long)]
        deployment: Option<String>,
        /// Share of requests (0-1] answered with --status instead of the app.
        #[arg(long)]
        error_rate: Option<f64>,
        /// Status of the injected answers (default 500).
        #[arg(long, requires = "error_rate")]
        status: Option<u16>,
        /// Delay requests by this long (e.g. 3s, 250ms).
        #[arg(long)]
        delay: Option<String>,
        /// Share of requests (0-1] delayed (default 1).
        #[arg(long, requires = "delay")]
        rate: Option<f64>,
        /// End the fault injection now.
        #[arg(long)]
        recover: bool,
        /// How long until it ends by itself (e.g. 10m; default 15m).
        #[arg(long = "for", value_name = "DURATION", conflicts_with = "recover")]
        for_: Option<String>,
    },
    /// Manage projects' secrets, used by [env] entries (deployer).
    #[command(subcommand)]
    Secrets(SecretsCmd),
    /// Split an app's traffic between its live deployment and another
    /// (admin): A/B tests between builds.
    #[command(subcommand)]
    Traffic(TrafficCmd),
    /// An app's routing script (Lua, docs/scripts.md): push a version live
    /// without a redeploy, list versions, roll back (deployer).
    #[command(subcommand)]
    Scripts(ScriptsCmd),
    /// A canary rolling out (`[rollout] strategy = "canary"`): take the next
    /// step by hand (what a paused rollout waits for) or abort it (deployer).
    #[command(subcommand)]
    Rollout(RolloutCmd),
    /// A `bifrost-router` cluster, as one of its routers sees it.
    #[command(subcommand)]
    Cluster(ClusterCmd),
    /// The policy gates (Rego): `deploy` before a deployment starts,
    /// `promote` before each canary step. Read: anyone; change: admin.
    #[command(subcommand)]
    Policies(PoliciesCmd),
    /// The audit report (Markdown: timeline, policy violations, mode
    /// changes, chaos, who did what) of an app or all; `audit verify` checks
    /// every hash chain and the global anchor.
    #[command(args_conflicts_with_subcommands = true)]
    Audit {
        #[command(subcommand)]
        cmd: Option<AuditCmd>,
        /// Only this app.
        project: Option<String>,
        /// How far back: 30m, 24h, 7d (default 24h).
        #[arg(long, default_value = "24h")]
        since: String,
        /// Write the report to this file instead of stdout.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Analytics from Bifrost's records: DORA's four keys (deployment
    /// frequency, lead time, change failure rate, time to restore), cost
    /// per app and anomalies (docs/analytics.md).
    #[command(subcommand)]
    Analytics(AnalyticsCmd),
    /// Inspect events.
    #[command(subcommand)]
    Events(EventsCmd),
    /// Manage API tokens (admin).
    #[command(subcommand)]
    Tokens(TokensCmd),
}

#[derive(Subcommand, Debug)]
enum ProjectsCmd {
    /// Create a project fed by a git repository (URL or local path).
    Add {
        name: String,
        /// Git URL or local path of a git repository.
        #[arg(long)]
        repo: Option<String>,
        /// Branch whose pushes deploy (default: the one the repository's HEAD names).
        #[arg(long)]
        branch: Option<String>,
        /// HMAC secret for the GitHub webhook (generated when omitted).
        #[arg(long, env = "BIFROST_WEBHOOK_SECRET", hide_env_values = true)]
        webhook_secret: Option<String>,
    },
    /// List projects.
    List,
    /// Show one project.
    Show { name: String },
    /// Delete a project; cancels its in-flight deployments.
    Rm {
        name: String,
        /// Do not ask for confirmation.
        #[arg(long, short)]
        yes: bool,
    },
}

#[derive(Subcommand, Debug)]
enum DeploymentsCmd {
    /// List deployments, newest first.
    List {
        #[arg(long, short)]
        project: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
}

#[derive(Subcommand, Debug)]
enum EventsCmd {
    /// Events whose delivery gave up; --redrive delivers them again.
    Dead {
        /// Redrive these dead letters (all when none are named).
        #[arg(long)]
        redrive: bool,
        /// Dead letter ids (as listed) to redrive.
        ids: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
enum TrafficCmd {
    /// Send a sticky share of clients to DEPLOYMENT (healthy once, or a
    /// running canary; its replicas start if they do not run). A client
    /// keeps its side as the weight rises.
    Split {
        project: String,
        #[arg(long)]
        to: String,
        /// 0-100.
        #[arg(long, value_parser = clap::value_parser!(u8).range(0..=100))]
        weight: u8,
    },
    /// Every client back on the live deployment (the other's replicas stop).
    Reset { project: String },
}

#[derive(Subcommand, Debug)]
enum ScriptsCmd {
    /// Compile FILE, dry-run it on a synthetic request, and run it for APP
    /// (refused with the Lua error and line if either fails).
    Push { project: String, file: PathBuf },
    /// The versions (who, when, sha256, state) and their errors in the router.
    List { project: String },
    /// Run an earlier version (default: the one before the running one;
    /// --to 0: none pushed, the deployment's own script).
    Rollback {
        project: String,
        #[arg(long)]
        to: Option<u32>,
    },
}

#[derive(Subcommand, Debug)]
enum RolloutCmd {
    /// The next step now, without asking the promote gate.
    Promote { project: String },
    /// Weight 0 and the canary cancelled; the live deployment untouched.
    Abort { project: String },
}

#[derive(Subcommand, Debug)]
enum ClusterCmd {
    /// Members, health and each node's state (`GET /cluster/status` of the
    /// router); exits 1 when the cluster is not healthy.
    Status {
        /// A router's URL, e.g. http://router-0:8080 (no token needed).
        #[arg(long)]
        router: String,
    },
}

#[derive(Subcommand, Debug)]
enum AnalyticsCmd {
    /// A project's four keys over 7, 30 and 90 days, with DORA's bands; or
    /// every project's over --days.
    Show {
        project: Option<String>,
        /// The period in days (1–365).
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=365))]
        days: u32,
    },
    /// Analyse every project over one closed window now (admin); a window
    /// analysed before keeps its first result.
    Run {
        /// START/LENGTH in UTC, e.g. 2026-11-29T10:00Z/1h (default: the
        /// last full 5 minutes).
        #[arg(long)]
        window: Option<String>,
    },
    /// The price table cost is computed with.
    #[command(subcommand)]
    Prices(PricesCmd),
}

#[derive(Subcommand, Debug)]
enum PricesCmd {
    /// The current table (defaults: GKE Autopilot, us-central1, USD).
    Show,
    /// Change prices (admin); what is not given is kept.
    Set {
        /// Per vCPU-hour.
        #[arg(long)]
        cpu_core_hour: Option<f64>,
        /// Per GiB-hour of memory.
        #[arg(long)]
        memory_gib_hour: Option<f64>,
        /// A 3-letter code, e.g. EUR.
        #[arg(long)]
        currency: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum AuditCmd {
    /// Check every deployment's hash chain, the global anchor over all of
    /// them and the policies' versions; exits 1 naming what broke.
    Verify {
        /// A head anchor printed by an earlier verify: it must still be in
        /// the trail (detects a cut of the newest records).
        #[arg(long)]
        head: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum PoliciesCmd {
    /// Each gate's policy in force: version, who set it, data.
    List,
    /// One policy: its Rego, data, per-project values and history.
    Show { name: String },
    /// Replace a policy's Rego (refused with the line if it does not
    /// compile; the one in force stays).
    Set {
        name: String,
        file: PathBuf,
        /// Replace its data document too (a JSON object).
        #[arg(long)]
        data: Option<PathBuf>,
    },
    /// Change thresholds: `--set min_disk_gb=20` (the value is JSON, else a
    /// string); `--project APP` for one project only.
    Data {
        name: String,
        #[arg(long, value_name = "KEY=VALUE")]
        set: Vec<String>,
        #[arg(long, value_name = "KEY")]
        unset: Vec<String>,
        #[arg(long, short)]
        project: Option<String>,
    },
    /// Evaluate a policy on an input (JSON file) and print the decision,
    /// acting on nothing; exits 1 when denied. `--rego` / `--data` try a
    /// draft instead of what is in force (admins; nothing stored).
    Test {
        name: String,
        #[arg(long)]
        input: PathBuf,
        #[arg(long, short)]
        project: Option<String>,
        #[arg(long)]
        rego: Option<PathBuf>,
        #[arg(long)]
        data: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum SecretsCmd {
    /// Set a project's secret (the value is read from stdin when omitted;
    /// prefer stdin: arguments show in `ps` and shell history).
    Set {
        name: String,
        /// The project whose deployments may use it.
        #[arg(long, short)]
        project: String,
        value: Option<String>,
    },
    /// Names and update times (never values): of one project, or (admin) all.
    List {
        #[arg(long, short)]
        project: Option<String>,
    },
    /// Delete a project's secret.
    Rm {
        name: String,
        #[arg(long, short)]
        project: String,
    },
}

#[derive(Subcommand, Debug)]
enum TokensCmd {
    /// Create a token; its secret is printed once.
    Create {
        name: String,
        /// viewer < deployer < admin; router: a bifrost-router node's, reads the routing table only.
        #[arg(long, value_parser = ["viewer", "deployer", "admin", "router"])]
        role: String,
        /// Limit the token to this project (deployer and viewer only).
        #[arg(long, short)]
        project: Option<String>,
    },
    List,
    Revoke {
        name: String,
    },
}

/// Logs on stderr, in batches (hold the guard until the command ends).
fn init_tracing(verbose_default: &str) -> bifrost_service::batched::Flush {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("BIFROST_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new(verbose_default));
    bifrost_service::init_cli_logging(filter, std::env::var_os("K_SERVICE").is_some())
}

// glibc malloc showed up as ~5% of the router's CPU profile under load.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // `bifrost sandbox run|enter|probe …`: the platform's own helper in
    // front of every build and replica. Plain and synchronous (it restricts
    // itself and execs), so it runs before clap and the async runtime.
    let mut args = std::env::args_os();
    if args.nth(1).is_some_and(|a| a == "sandbox") {
        let mode = args.next().map(|m| m.to_string_lossy().into_owned()).unwrap_or_default();
        bifrost_local::sandbox::helper::main(&mode, args.collect());
    }
    let cli = Cli::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Command::ServeStatic(_) = cli.command {
        // Files are read on tokio's blocking pool; unbounded (512 threads)
        // it grew past 360 threads under 64 clients and the kernel killed
        // the replica at its memory limit. A few threads keep up with any
        // disk here: requests queue for them instead.
        builder.max_blocking_threads(serve_static::BLOCKING_THREADS);
    }
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(run(cli));
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{} {}", console::style("error:").red().bold(), e.message);
            ExitCode::from(e.exit as u8)
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode, CliError> {
    if let Command::Up(args) = cli.command {
        let _log = init_tracing("info,tower_http=info");
        up::run(args).await?;
        return Ok(ExitCode::SUCCESS);
    }
    if let Command::ServeStatic(args) = cli.command {
        let _log = init_tracing("warn");
        serve_static::run(args).await?;
        return Ok(ExitCode::SUCCESS);
    }
    let _log = init_tracing("warn");
    if let Command::Validate { file, schema, explain } = &cli.command {
        return commands::validate(file.clone(), *schema, *explain, cli.json);
    }
    if let Command::Render(args) = &cli.command {
        return commands::render(args, cli.json);
    }
    if let Command::Cluster(ClusterCmd::Status { router }) = &cli.command {
        return cluster::status(router, cli.json).await;
    }
    let api = Api::new(&cli.server, cli.token.clone())?;
    let json = cli.json;
    match cli.command {
        Command::Up(_)
        | Command::Validate { .. }
        | Command::Render(_)
        | Command::ServeStatic(_)
        | Command::Cluster(_) => unreachable_command(),
        Command::Login { token } => commands::login(&cli.server, &token).await,
        Command::Logout => commands::logout(&cli.server),
        Command::Projects(p) => match p {
            ProjectsCmd::Add { name, repo, branch, webhook_secret } => {
                commands::projects_add(&api, json, &name, repo, branch, webhook_secret).await
            }
            ProjectsCmd::List => commands::projects_list(&api, json).await,
            ProjectsCmd::Show { name } => commands::projects_show(&api, json, &name).await,
            ProjectsCmd::Rm { name, yes } => commands::projects_rm(&api, json, &name, yes).await,
        },
        Command::Deploy { path, project, git_ref, wait } => {
            commands::deploy(&api, json, path, project, git_ref, wait).await
        }
        Command::Deployments(DeploymentsCmd::List { project, limit }) => {
            commands::deployments_list(&api, json, project, limit).await
        }
        Command::Status { id, once } if !app_status::is_deployment_id(&id) => {
            app_status::run(&api, json, &id, once).await
        }
        Command::Status { id, .. } => commands::status(&api, json, &id).await,
        Command::Retry { id } => commands::retry(&api, json, &id).await,
        Command::Cancel { id } => commands::cancel(&api, json, &id).await,
        Command::Events(EventsCmd::Dead { redrive, ids }) => commands::dead(&api, json, redrive, ids).await,
        Command::Logs { id, follow } => commands::logs(&api, json, &id, follow).await,
        Command::Open { app, print } => commands::open(&api, json, &app, print).await,
        Command::Rollback { project, to, wait } => commands::rollback(&api, json, &project, to, wait).await,
        Command::Chaos { project, deployment, error_rate, status, delay, rate, recover, for_ } => {
            let fault = commands::ChaosArgs { deployment, error_rate, status, delay, rate, for_ };
            commands::chaos(&api, json, &project, (!recover).then_some(fault)).await
        }
        Command::Traffic(tc) => match tc {
            TrafficCmd::Split { project, to, weight } => {
                commands::traffic(&api, json, &project, Some((to, weight))).await
            }
            TrafficCmd::Reset { project } => commands::traffic(&api, json, &project, None).await,
        },
        Command::Scripts(sc) => match sc {
            ScriptsCmd::Push { project, file } => scripts::push(&api, json, &project, &file).await,
            ScriptsCmd::List { project } => scripts::list(&api, json, &project).await,
            ScriptsCmd::Rollback { project, to } => scripts::rollback(&api, json, &project, to).await,
        },
        Command::Audit { cmd: Some(AuditCmd::Verify { head }), .. } => audit::verify(&api, json, head.as_deref()).await,
        Command::Audit { cmd: None, project, since, output } => {
            audit::report(&api, json, project.as_deref(), &since, output.as_deref()).await
        }
        Command::Analytics(AnalyticsCmd::Show { project, days }) => {
            analytics::show(&api, json, project.as_deref(), days).await
        }
        Command::Analytics(AnalyticsCmd::Run { window }) => analytics::run(&api, json, window.as_deref()).await,
        Command::Analytics(AnalyticsCmd::Prices(PricesCmd::Show)) => analytics::prices(&api, json, None).await,
        Command::Analytics(AnalyticsCmd::Prices(PricesCmd::Set { cpu_core_hour, memory_gib_hour, currency })) => {
            let change = serde_json::json!({
                "cpu_core_hour": cpu_core_hour, "memory_gib_hour": memory_gib_hour, "currency": currency,
            });
            analytics::prices(&api, json, Some(change)).await
        }
        Command::Rollout(RolloutCmd::Promote { project }) => commands::rollout(&api, json, &project, "promote").await,
        Command::Rollout(RolloutCmd::Abort { project }) => commands::rollout(&api, json, &project, "abort").await,
        Command::Policies(pc) => match pc {
            PoliciesCmd::List => policies::list(&api, json).await,
            PoliciesCmd::Show { name } => policies::show(&api, json, &name).await,
            PoliciesCmd::Set { name, file, data } => policies::set(&api, json, &name, &file, data.as_deref()).await,
            PoliciesCmd::Data { name, set, unset, project } => {
                policies::data(&api, json, &name, &set, &unset, project.as_deref()).await
            }
            PoliciesCmd::Test { name, input, project, rego, data } => {
                let draft = policies::Draft { rego: rego.as_deref(), data: data.as_deref() };
                policies::test(&api, json, &name, &input, project.as_deref(), draft).await
            }
        },
        Command::Secrets(sc) => match sc {
            SecretsCmd::Set { name, project, value } => commands::secrets_set(&api, &project, &name, value).await,
            SecretsCmd::List { project } => commands::secrets_list(&api, json, project.as_deref()).await,
            SecretsCmd::Rm { name, project } => commands::secrets_rm(&api, &project, &name).await,
        },
        Command::Tokens(t) => match t {
            TokensCmd::Create { name, role, project } => {
                commands::tokens_create(&api, json, &name, &role, project.as_deref()).await
            }
            TokensCmd::List => commands::tokens_list(&api, json).await,
            TokensCmd::Revoke { name } => commands::tokens_revoke(&api, json, &name).await,
        },
    }
}

fn unreachable_command() -> Result<ExitCode, CliError> {
    Err(CliError::new(client::Exit::Error, "internal error: command dispatched twice"))
}
