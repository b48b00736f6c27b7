//! The API client and the CLI's error type (which carries the exit code).

use std::fmt;
use std::path::PathBuf;

use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Documented exit codes (docs/cli.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// Network trouble, server errors, anything unexpected.
    Error = 1,
    /// deploy.toml is invalid.
    Invalid = 3,
    /// The deployment ended failed, cancelled or superseded (`--wait`).
    DeployFailed = 4,
    /// Missing, invalid or under-privileged token.
    Auth = 5,
    NotFound = 6,
    /// The request conflicts with the current state (e.g. retrying a healthy deployment).
    Conflict = 7,
}

#[derive(Debug)]
pub struct CliError {
    pub exit: Exit,
    pub message: String,
}

impl CliError {
    pub fn new(exit: Exit, message: impl Into<String>) -> Self {
        CliError { exit, message: message.into() }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<anyhow::Error> for CliError {
    fn from(e: anyhow::Error) -> Self {
        CliError::new(Exit::Error, format!("{e:#}"))
    }
}

pub type CliResult<T> = Result<T, CliError>;

/// Where the CLI keeps tokens per server (`bifrost login`, `bifrost up`).
pub fn credentials_path() -> PathBuf {
    if let Some(dir) = std::env::var_os("BIFROST_CONFIG_DIR") {
        return PathBuf::from(dir).join("credentials.json");
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::home_dir().map(|h| h.join(".config")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("bifrost").join("credentials.json")
}

pub fn saved_token(server: &str) -> Option<String> {
    let text = std::fs::read_to_string(credentials_path()).ok()?;
    let v: Value = serde_json::from_str(&text).ok()?;
    v["servers"][server.trim_end_matches('/')].as_str().map(str::to_string)
}

pub fn save_token(server: &str, token: Option<&str>) -> std::io::Result<PathBuf> {
    let path = credentials_path();
    let mut v: Value = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_else(|| serde_json::json!({"servers": {}}));
    let key = server.trim_end_matches('/').to_string();
    match token {
        Some(t) => v["servers"][&key] = Value::String(t.to_string()),
        None => {
            if let Some(m) = v["servers"].as_object_mut() {
                m.remove(&key);
            }
        }
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // 0600 from the first byte, and atomic: no reader ever sees a partial
    // file or one readable by others.
    bifrost_local::sandbox::write_private(&path, &serde_json::to_vec_pretty(&v).unwrap_or_default())?;
    Ok(path)
}

pub struct Api {
    pub server: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Api {
    pub fn new(server: &str, token: Option<String>) -> CliResult<Self> {
        let server = server.trim_end_matches('/').to_string();
        let token = token.or_else(|| saved_token(&server));
        let http = reqwest::Client::builder()
            .user_agent(concat!("bifrost-cli/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|e| CliError::new(Exit::Error, format!("cannot build HTTP client: {e}")))?;
        Ok(Api { server, token, http })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.server, path)
    }

    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let mut rb = self.http.request(method, self.url(path));
        if let Some(t) = &self.token {
            rb = rb.bearer_auth(t);
        }
        rb
    }

    pub async fn send<T: DeserializeOwned>(&self, rb: reqwest::RequestBuilder) -> CliResult<T> {
        let resp = rb.send().await.map_err(|e| self.network_error(e))?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| self.network_error(e))?;
        if !status.is_success() {
            return Err(api_error(status, &bytes));
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| CliError::new(Exit::Error, format!("unexpected answer from {}: {e}", self.server)))
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> CliResult<T> {
        self.send(self.request(Method::GET, path)).await
    }

    pub async fn post<T: DeserializeOwned>(&self, path: &str, body: &impl Serialize) -> CliResult<T> {
        self.send(self.request(Method::POST, path).json(body)).await
    }

    pub async fn put<T: DeserializeOwned>(&self, path: &str, body: &impl Serialize) -> CliResult<T> {
        self.send(self.request(Method::PUT, path).json(body)).await
    }

    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> CliResult<T> {
        self.send(self.request(Method::DELETE, path)).await
    }

    fn network_error(&self, e: reqwest::Error) -> CliError {
        let hint = if e.is_connect() {
            format!(
                " — is Bifrost running? Start it with `bifrost up`, or point --server / BIFROST_SERVER at it (now {})",
                self.server
            )
        } else {
            String::new()
        };
        CliError::new(Exit::Error, format!("cannot reach {}: {e}{hint}", self.server))
    }
}

/// Turns an error answer into a CLI error with the server's message.
pub fn api_error(status: StatusCode, body: &[u8]) -> CliError {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let message = parsed
        .as_ref()
        .and_then(|v| v["error"]["message"].as_str().map(crate::output::term_safe))
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string());
    let exit = match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Exit::Auth,
        StatusCode::NOT_FOUND => Exit::NotFound,
        StatusCode::CONFLICT => Exit::Conflict,
        // deploy.toml, or a policy that does not compile: not "denied" (1).
        StatusCode::UNPROCESSABLE_ENTITY
            if parsed
                .as_ref()
                .is_some_and(|v| matches!(v["error"]["code"].as_str(), Some("invalid_config" | "policy_error"))) =>
        {
            Exit::Invalid
        }
        _ => Exit::Error,
    };
    let hint = if status == StatusCode::UNAUTHORIZED {
        "\nhint: pass --token / BIFROST_TOKEN, or run `bifrost login --token <token>`"
    } else {
        ""
    };
    CliError::new(exit, format!("{message} (HTTP {}){hint}", status.as_u16()))
}
