//! Walks the span-preserving TOML tree and checks every key, collecting all
//! problems instead of stopping at the first.

use std::collections::BTreeMap;
use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::schema::{KEYS, SECTIONS, keys_of};
use super::values::{self, Duration};
use super::*;
use crate::domain::is_dns_label;

type Item<'i> = Spanned<DeValue<'i>>;

/// Headers the router owns; scripts and config may not touch them.
const RESERVED_HEADERS: &[&str] = &["host", "content-length", "transfer-encoding", "connection"];
/// Env vars the platform sets itself.
const RESERVED_ENV: &[&str] = &["PORT"];

pub(super) fn validate(source: &str) -> Result<DeployConfig, Vec<ConfigError>> {
    let mut v = Validator::new(source);
    let root = match DeTable::parse(source) {
        Ok(t) => t,
        Err(e) => {
            let span = e.span().unwrap_or(0..0);
            let msg = e.message().trim().to_string();
            v.push(span, "", format!("invalid TOML: {msg}"), None, None, None);
            return Err(v.errors);
        }
    };
    let config = v.document(root.get_ref());
    if v.errors.is_empty() {
        config.ok_or_else(|| v.errors.clone())
    } else {
        v.errors.sort_by_key(|e| (e.line, e.column));
        Err(v.errors)
    }
}

struct Validator<'s> {
    src: &'s str,
    line_starts: Vec<usize>,
    errors: Vec<ConfigError>,
}

/// What a section contributed, with the spans needed for cross-key checks.
struct Found<T> {
    value: Option<T>,
    span: Range<usize>,
    /// The key was written (even if its value was wrong).
    present: bool,
}

impl<T> Default for Found<T> {
    fn default() -> Self {
        Found { value: None, span: 0..0, present: false }
    }
}

impl<T> Found<T> {
    fn set(&mut self, value: Option<T>, span: Range<usize>) {
        self.value = value;
        self.span = span;
        self.present = true;
    }

    /// Written but rejected.
    fn invalid(&self) -> bool {
        self.present && self.value.is_none()
    }
}

impl<'s> Validator<'s> {
    fn new(src: &'s str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(src.match_indices('\n').map(|(i, _)| i + 1));
        Validator { src, line_starts, errors: vec![] }
    }

    fn position(&self, offset: usize) -> (u32, u32) {
        let offset = offset.min(self.src.len());
        let line = self.line_starts.partition_point(|&s| s <= offset).max(1);
        let start = self.line_starts[line - 1];
        let col = self.src.get(start..offset).map(|s| s.chars().count()).unwrap_or(0) + 1;
        (line as u32, col as u32)
    }

    fn push(
        &mut self,
        span: Range<usize>,
        path: &str,
        message: String,
        expected: Option<String>,
        found: Option<String>,
        suggestion: Option<String>,
    ) {
        let (line, column) = self.position(span.start);
        self.errors.push(ConfigError {
            line,
            column,
            path: path.to_string(),
            message,
            expected,
            found,
            suggestion,
            source_line: None,
        });
    }

    /// `path: expected X, found Y`.
    fn expected(&mut self, path: &str, item: &Item<'_>, expected: &str) {
        let found = self.describe(item);
        self.push(
            item.span(),
            path,
            format!("{path}: expected {expected}, found {found}"),
            Some(expected.to_string()),
            Some(found),
            None,
        );
    }

    fn describe(&self, item: &Item<'_>) -> String {
        match item.get_ref() {
            DeValue::String(s) => {
                let shown: String = s.chars().take(40).collect();
                let ell = if s.chars().count() > 40 { "…" } else { "" };
                format!("{:?}{ell}", shown)
            }
            DeValue::Integer(i) => format!("integer {i}"),
            DeValue::Float(f) => format!("float {f}"),
            DeValue::Boolean(b) => format!("boolean {b}"),
            DeValue::Datetime(d) => format!("datetime {d}"),
            DeValue::Array(_) => match self.src.get(item.span()) {
                Some(text) if text.len() <= 40 && !text.contains('\n') => text.to_string(),
                _ => "an array".into(),
            },
            DeValue::Table(_) => "a table".into(),
        }
    }

    fn unknown_key(&mut self, section: &str, key: &Spanned<std::borrow::Cow<'_, str>>, candidates: &[&str]) {
        let name = key.get_ref().as_ref();
        let path = if section.is_empty() { name.to_string() } else { format!("{section}.{name}") };
        let suggestion = did_you_mean(name, candidates.iter().copied());
        let mut message = if section.is_empty() {
            format!("{path}: unknown section [{name}]")
        } else {
            format!("{path}: unknown key `{name}` in [{section}]")
        };
        match &suggestion {
            Some(s) => message.push_str(&format!("; did you mean `{s}`?")),
            None if !candidates.is_empty() => {
                message.push_str(&format!(" (expected one of: {})", candidates.join(", ")))
            }
            None => {}
        }
        self.push(key.span(), &path, message, None, Some(name.to_string()), suggestion);
    }

    fn string(&mut self, path: &str, item: &Item<'_>) -> Option<String> {
        match item.get_ref() {
            DeValue::String(s) if !s.trim().is_empty() => Some(s.to_string()),
            DeValue::String(_) => {
                self.expected(path, item, "a non-empty string");
                None
            }
            _ => {
                self.expected(path, item, "a string");
                None
            }
        }
    }

    fn integer(&mut self, path: &str, item: &Item<'_>, min: i64, max: i64) -> Option<i64> {
        let expected = format!("an integer from {min} to {max}");
        match item.get_ref() {
            DeValue::Integer(i) => match i64::from_str_radix(&i.as_str().replace('_', ""), i.radix()) {
                Ok(n) if (min..=max).contains(&n) => Some(n),
                _ => {
                    self.expected(path, item, &expected);
                    None
                }
            },
            _ => {
                self.expected(path, item, &expected);
                None
            }
        }
    }

    fn number(&mut self, path: &str, item: &Item<'_>, min: f64, max: f64) -> Option<f64> {
        let parsed = match item.get_ref() {
            DeValue::Float(f) => f.as_str().replace('_', "").parse::<f64>().ok(),
            DeValue::Integer(i) if i.radix() == 10 => i.as_str().replace('_', "").parse::<f64>().ok(),
            _ => None,
        };
        match parsed {
            Some(n) if n.is_finite() && (min..=max).contains(&n) => Some(n),
            _ => {
                self.expected(path, item, &format!("a number from {min} to {max}"));
                None
            }
        }
    }

    fn duration(&mut self, path: &str, item: &Item<'_>) -> Option<Duration> {
        match item.get_ref() {
            DeValue::String(s) => match values::parse_duration(s) {
                Ok(d) if d.millis > 0 => Some(d),
                Ok(_) => {
                    self.expected(path, item, "a duration longer than 0s");
                    None
                }
                Err(exp) => {
                    self.expected(path, item, exp);
                    None
                }
            },
            _ => {
                self.expected(path, item, values::DURATION_EXPECTED);
                None
            }
        }
    }

    fn table<'a, 'i>(&mut self, path: &str, item: &'a Item<'i>) -> Option<&'a DeTable<'i>> {
        match item.get_ref() {
            DeValue::Table(t) => Some(t),
            _ => {
                self.expected(path, item, &format!("a table ([{path}])"));
                None
            }
        }
    }

    fn document(&mut self, root: &DeTable<'_>) -> Option<DeployConfig> {
        let section_names: Vec<&str> = SECTIONS.iter().map(|(s, _, _)| *s).collect();
        let mut app = None;
        let mut build = Some(Build::default());
        let mut run = Some(Run::default());
        let mut scaling = Some(None);
        let mut health = Some(Health::default());
        let mut resources = Some(Resources::default());
        let mut env = Some(BTreeMap::new());
        let mut rollout = Some(Rollout::default());
        let mut traffic = Some(Traffic::default());
        let mut seen_app = false;

        for (key, item) in root.iter() {
            let name = key.get_ref().as_ref();
            if !section_names.contains(&name) {
                // A key that belongs to a section written at the top level:
                // suggest the dotted path.
                let home = KEYS.iter().find(|k| k.key == name).map(|k| format!("{}.{}", k.section, k.key));
                if let Some(home) = home {
                    let message = format!(
                        "{name}: unknown top-level key `{name}`; did you mean `{home}` (under [{}])?",
                        home.split('.').next().unwrap_or("")
                    );
                    self.push(key.span(), name, message, None, Some(name.to_string()), Some(home));
                } else {
                    self.unknown_key("", key, &section_names);
                }
                continue;
            }
            seen_app |= name == "app";
            let Some(table) = self.table(name, item) else {
                continue;
            };
            match name {
                "app" => app = self.app(table, key.span()),
                "build" => build = self.build(table),
                "run" => run = self.run(table),
                "scaling" => scaling = self.scaling(table).map(Some),
                "health" => health = self.health(table),
                "resources" => resources = self.resources(table),
                "env" => env = self.env(table),
                "rollout" => rollout = self.rollout(table),
                "traffic" => traffic = self.traffic(table),
                _ => {}
            }
        }
        if !seen_app {
            self.push(
                0..0,
                "app",
                "app: missing required section [app] (with `name` and `runtime`)".into(),
                Some("a table [app]".into()),
                Some("nothing".into()),
                None,
            );
        }
        let scaling = scaling?.unwrap_or(Scaling {
            min_replicas: DEFAULT_MIN_REPLICAS,
            max_replicas: DEFAULT_MAX_REPLICAS,
            cpu_target: DEFAULT_CPU_TARGET,
        });
        Some(DeployConfig {
            app: app?,
            build: build?,
            run: run?,
            scaling,
            health: health?,
            resources: resources?,
            env: env?,
            rollout: rollout?,
            traffic: traffic?,
        })
    }

    /// Reports every missing required key of a section at its header.
    fn required(&mut self, section: &str, header: &Range<usize>, key: &str, what: &str) {
        let path = format!("{section}.{key}");
        self.push(
            header.clone(),
            &path,
            format!("{path}: missing required key `{key}` in [{section}] ({what})"),
            Some(what.to_string()),
            Some("nothing".into()),
            None,
        );
    }

    fn app(&mut self, t: &DeTable<'_>, header: Range<usize>) -> Option<App> {
        let known: Vec<_> = keys_of("app").collect();
        let (mut name, mut runtime) = (Found::default(), Found::default());
        for (key, item) in t.iter() {
            match key.get_ref().as_ref() {
                "name" => {
                    let v = self.string("app.name", item).and_then(|s| {
                        if is_dns_label(&s) {
                            Some(s)
                        } else {
                            self.expected(
                                "app.name",
                                item,
                                "a DNS label: 1-63 lowercase letters, digits or '-', not starting or ending with '-'",
                            );
                            None
                        }
                    });
                    name.set(v, item.span());
                }
                "runtime" => {
                    let expected = "one of \"rust\", \"go\", \"python\", \"node\", \"static\", \"docker\"";
                    let v = match item.get_ref() {
                        DeValue::String(s) => match Runtime::ALL.into_iter().find(|r| r.as_str() == s.as_ref()) {
                            Some(r) => Some(r),
                            None => {
                                let found = self.describe(item);
                                let sugg = did_you_mean(&s.to_lowercase(), Runtime::ALL.iter().map(|r| r.as_str()));
                                let mut message = format!("app.runtime: expected {expected}, found {found}");
                                if let Some(s) = &sugg {
                                    message.push_str(&format!("; did you mean \"{s}\"?"));
                                }
                                self.push(
                                    item.span(),
                                    "app.runtime",
                                    message,
                                    Some(expected.into()),
                                    Some(found),
                                    sugg,
                                );
                                None
                            }
                        },
                        _ => {
                            self.expected("app.runtime", item, expected);
                            None
                        }
                    };
                    runtime.set(v, item.span());
                }
                _ => self.unknown_key("app", key, &known),
            }
        }
        if !name.present {
            self.required("app", &header, "name", "a DNS label, e.g. name = \"hello-python\"");
        }
        if !runtime.present {
            self.required("app", &header, "runtime", "one of rust, go, python, node, static, docker");
        }
        Some(App { name: name.value?, runtime: runtime.value? })
    }

    fn build(&mut self, t: &DeTable<'_>) -> Option<Build> {
        let known: Vec<_> = keys_of("build").collect();
        let mut out = Build::default();
        let mut ok = true;
        for (key, item) in t.iter() {
            match key.get_ref().as_ref() {
                "command" => {
                    out.command = self.string("build.command", item);
                    ok &= out.command.is_some();
                }
                "dockerfile" => {
                    out.dockerfile = self.repo_path("build.dockerfile", item, None);
                    ok &= out.dockerfile.is_some();
                }
                _ => {
                    self.unknown_key("build", key, &known);
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    }

    fn repo_path(&mut self, path: &str, item: &Item<'_>, suffix: Option<&str>) -> Option<String> {
        let s = self.string(path, item)?;
        let good = values::is_repo_path(&s) && suffix.is_none_or(|suf| s.ends_with(suf));
        if good {
            Some(s)
        } else {
            let what = match suffix {
                Some(suf) => {
                    format!("a relative path inside the repository ending in {suf}, without '..'")
                }
                None => "a relative path inside the repository, without '..'".to_string(),
            };
            self.expected(path, item, &what);
            None
        }
    }

    fn run(&mut self, t: &DeTable<'_>) -> Option<Run> {
        let known: Vec<_> = keys_of("run").collect();
        let mut out = Run::default();
        let mut ok = true;
        for (key, item) in t.iter() {
            match key.get_ref().as_ref() {
                "command" => {
                    out.command = self.string("run.command", item);
                    ok &= out.command.is_some();
                }
                "port" => match self.integer("run.port", item, 1, 65535) {
                    Some(p) => out.port = p as u16,
                    None => ok = false,
                },
                _ => {
                    self.unknown_key("run", key, &known);
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    }

    fn scaling(&mut self, t: &DeTable<'_>) -> Option<Scaling> {
        let known: Vec<_> = keys_of("scaling").collect();
        let (mut min, mut max, mut cpu) = (Found::default(), Found::default(), Found::default());
        let mut ok = true;
        let limit = MAX_REPLICAS_LIMIT as i64;
        for (key, item) in t.iter() {
            match key.get_ref().as_ref() {
                "min_replicas" => min.set(self.integer("scaling.min_replicas", item, 1, limit), item.span()),
                "max_replicas" => max.set(self.integer("scaling.max_replicas", item, 1, limit), item.span()),
                "cpu_target" => cpu.set(self.integer("scaling.cpu_target", item, 1, 100), item.span()),
                _ => {
                    self.unknown_key("scaling", key, &known);
                    ok = false;
                }
            }
        }
        ok &= !(min.invalid() || max.invalid() || cpu.invalid());
        let min_v = min.value.unwrap_or(DEFAULT_MIN_REPLICAS as i64);
        if let Some(mx) = max.value
            && mx < min_v
            && !min.invalid()
        {
            let expected = format!("an integer >= min_replicas ({min_v})");
            self.push(
                max.span.clone(),
                "scaling.max_replicas",
                format!("scaling.max_replicas: expected {expected}, found integer {mx}"),
                Some(expected),
                Some(format!("integer {mx}")),
                None,
            );
            ok = false;
        }
        ok.then(|| Scaling {
            min_replicas: min_v as u32,
            max_replicas: max.value.map(|v| v as u32).unwrap_or_else(|| max_replicas(min_v as u32)),
            cpu_target: cpu.value.map(|v| v as u32).unwrap_or(DEFAULT_CPU_TARGET),
        })
    }

    fn health(&mut self, t: &DeTable<'_>) -> Option<Health> {
        let known: Vec<_> = keys_of("health").collect();
        let mut out = Health::default();
        let mut ok = true;
        let (mut interval, mut timeout) = (Found::default(), Found::default());
        for (key, item) in t.iter() {
            match key.get_ref().as_ref() {
                "path" => match self.string("health.path", item) {
                    Some(p) if p.starts_with('/') && !p.chars().any(char::is_whitespace) => out.path = p,
                    Some(_) => {
                        self.expected("health.path", item, "an HTTP path starting with '/', without spaces");
                        ok = false;
                    }
                    None => ok = false,
                },
                "interval" => interval.set(self.duration("health.interval", item), item.span()),
                "timeout" => timeout.set(self.duration("health.timeout", item), item.span()),
                "success_threshold" => match self.integer("health.success_threshold", item, 1, 100) {
                    Some(n) => out.success_threshold = n as u32,
                    None => ok = false,
                },
                "failure_threshold" => match self.integer("health.failure_threshold", item, 1, 100) {
                    Some(n) => out.failure_threshold = n as u32,
                    None => ok = false,
                },
                _ => {
                    self.unknown_key("health", key, &known);
                    ok = false;
                }
            }
        }
        ok &= !(interval.invalid() || timeout.invalid());
        if let Some(i) = interval.value {
            out.interval = i;
        }
        out.timeout = timeout.value.unwrap_or_else(|| health_timeout(out.interval));
        // Only a timeout the user wrote can be too long: an unset one
        // follows the interval (defaults.rs).
        if timeout.value.is_some() && out.timeout >= out.interval {
            let expected = format!("a duration shorter than health.interval ({})", out.interval);
            let found = format!("\"{}\"", out.timeout);
            self.push(
                timeout.span.clone(),
                "health.timeout",
                format!("health.timeout: expected {expected}, found {found}"),
                Some(expected),
                Some(found),
                None,
            );
            ok = false;
        }
        ok.then_some(out)
    }

    fn resources(&mut self, t: &DeTable<'_>) -> Option<Resources> {
        let known: Vec<_> = keys_of("resources").collect();
        let mut out = Resources::default();
        let mut ok = true;
        for (key, item) in t.iter() {
            match key.get_ref().as_ref() {
                "cpu" => {
                    // Kubernetes also accepts bare numbers for CPU.
                    let text = match item.get_ref() {
                        DeValue::String(s) => Some(s.to_string()),
                        DeValue::Integer(i) => Some(i.as_str().to_string()),
                        DeValue::Float(f) => Some(f.as_str().to_string()),
                        _ => None,
                    };
                    match text.map(|s| values::parse_cpu(&s)) {
                        Some(Ok(c)) => out.cpu = c,
                        Some(Err(exp)) => {
                            self.expected("resources.cpu", item, exp);
                            ok = false;
                        }
                        None => {
                            self.expected("resources.cpu", item, values::CPU_EXPECTED);
                            ok = false;
                        }
                    }
                }
                "memory" => match item.get_ref() {
                    DeValue::String(s) => match values::parse_memory(s) {
                        Ok(m) => out.memory = m,
                        Err(exp) => {
                            self.expected("resources.memory", item, exp);
                            ok = false;
                        }
                    },
                    _ => {
                        self.expected("resources.memory", item, values::MEMORY_EXPECTED);
                        ok = false;
                    }
                },
                _ => {
                    self.unknown_key("resources", key, &known);
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    }

    fn env(&mut self, t: &DeTable<'_>) -> Option<BTreeMap<String, EnvValue>> {
        let mut out = BTreeMap::new();
        let mut ok = true;
        for (key, item) in t.iter() {
            let name = key.get_ref().as_ref();
            let path = format!("env.{name}");
            if !values::is_env_key(name) {
                let expected = "an env var name matching [A-Z_][A-Z0-9_]*";
                let upper = name.to_uppercase().replace(['-', '.', ' '], "_");
                let sugg = values::is_env_key(&upper).then_some(upper);
                let mut message = format!("{path}: expected {expected}, found {name:?}");
                if let Some(s) = &sugg {
                    message.push_str(&format!("; did you mean `{s}`?"));
                }
                self.push(key.span(), &path, message, Some(expected.into()), Some(name.to_string()), sugg);
                ok = false;
                continue;
            }
            if RESERVED_ENV.contains(&name) {
                self.push(
                    key.span(),
                    &path,
                    format!("{path}: `{name}` is set by the platform (the app must read it, not set it)"),
                    Some("a name the platform does not set".into()),
                    Some(name.to_string()),
                    None,
                );
                ok = false;
                continue;
            }
            match item.get_ref() {
                DeValue::String(s) => {
                    out.insert(name.to_string(), EnvValue::Value(s.to_string()));
                }
                DeValue::Table(inner) => {
                    let mut secret = None;
                    for (k, v) in inner.iter() {
                        if k.get_ref().as_ref() == "secret" {
                            secret = self.string(&format!("{path}.secret"), v);
                            if secret.is_none() {
                                ok = false;
                            }
                        } else {
                            self.unknown_key(&path, k, &["secret"]);
                            ok = false;
                        }
                    }
                    match secret {
                        Some(s) => {
                            out.insert(name.to_string(), EnvValue::Secret { secret: s });
                        }
                        None if ok => {
                            self.expected(&path, item, "a string or { secret = \"name\" }");
                            ok = false;
                        }
                        None => {}
                    }
                }
                DeValue::Integer(_) | DeValue::Float(_) | DeValue::Boolean(_) => {
                    let lit = &self.src[item.span()];
                    let expected = format!("a string (write {name} = \"{lit}\")");
                    self.expected(&path, item, &expected);
                    ok = false;
                }
                _ => {
                    self.expected(&path, item, "a string or { secret = \"name\" }");
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    }

    fn rollout(&mut self, t: &DeTable<'_>) -> Option<Rollout> {
        let known: Vec<_> = keys_of("rollout").collect();
        let mut out = Rollout::default();
        let mut ok = true;
        for (key, item) in t.iter() {
            match key.get_ref().as_ref() {
                "strategy" => match item.get_ref() {
                    DeValue::String(s) if s == "rolling" => out.strategy = Strategy::Rolling,
                    DeValue::String(s) if s == "canary" => out.strategy = Strategy::Canary,
                    _ => {
                        self.expected("rollout.strategy", item, "\"rolling\" or \"canary\"");
                        ok = false;
                    }
                },
                "steps" => match self.steps(item) {
                    Some(s) => out.steps = s,
                    None => ok = false,
                },
                "analysis_interval" => match self.duration("rollout.analysis_interval", item) {
                    Some(d) => out.analysis_interval = d,
                    None => ok = false,
                },
                "max_error_rate" => match self.number("rollout.max_error_rate", item, 0.0, 1.0) {
                    Some(r) => out.max_error_rate = r,
                    None => ok = false,
                },
                "max_p99_ms" => match self.integer("rollout.max_p99_ms", item, 1, 600_000) {
                    Some(n) => out.max_p99_ms = n as u32,
                    None => ok = false,
                },
                "bake" => match self.duration("rollout.bake", item) {
                    Some(d) => out.bake = d,
                    None => ok = false,
                },
                "min_requests" => match self.integer("rollout.min_requests", item, 1, 1_000_000_000) {
                    Some(n) => out.min_requests = n as u32,
                    None => ok = false,
                },
                "on_no_data" => match item.get_ref() {
                    DeValue::String(s) if s == "pause" => out.on_no_data = OnNoData::Pause,
                    DeValue::String(s) if s == "rollback" => out.on_no_data = OnNoData::Rollback,
                    DeValue::String(s) if s == "promote" => out.on_no_data = OnNoData::Promote,
                    _ => {
                        self.expected("rollout.on_no_data", item, "\"pause\", \"rollback\" or \"promote\"");
                        ok = false;
                    }
                },
                _ => {
                    self.unknown_key("rollout", key, &known);
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    }

    fn steps(&mut self, item: &Item<'_>) -> Option<Vec<u32>> {
        let expected = "an array of percentages (1-100), strictly increasing and ending at 100, e.g. [10, 50, 100]";
        let DeValue::Array(arr) = item.get_ref() else {
            self.expected("rollout.steps", item, expected);
            return None;
        };
        let mut steps = vec![];
        let mut ok = true;
        for (i, el) in arr.iter().enumerate() {
            let path = format!("rollout.steps[{i}]");
            match self.integer(&path, el, 1, 100) {
                Some(n) => {
                    if let Some(&prev) = steps.last()
                        && n as u32 <= prev
                    {
                        self.expected(&path, el, &format!("a percentage greater than the step before ({prev})"));
                        ok = false;
                    }
                    steps.push(n as u32);
                }
                None => ok = false,
            }
        }
        if ok && steps.last() != Some(&100) {
            self.expected("rollout.steps", item, expected);
            ok = false;
        }
        ok.then_some(steps)
    }

    fn traffic(&mut self, t: &DeTable<'_>) -> Option<Traffic> {
        let known: Vec<_> = keys_of("traffic").collect();
        let mut out = Traffic::default();
        let mut ok = true;
        for (key, item) in t.iter() {
            match key.get_ref().as_ref() {
                "rate_limit" => match item.get_ref() {
                    DeValue::String(s) => match values::parse_rate_limit(s) {
                        Ok(r) => out.rate_limit = Some(r),
                        Err(exp) => {
                            self.expected("traffic.rate_limit", item, exp);
                            ok = false;
                        }
                    },
                    _ => {
                        self.expected("traffic.rate_limit", item, values::RATE_LIMIT_EXPECTED);
                        ok = false;
                    }
                },
                "rate_limit_key" => match item.get_ref() {
                    DeValue::String(s) => match values::parse_rate_limit_key(s) {
                        Ok(k) => out.rate_limit_key = k,
                        Err(exp) => {
                            self.expected("traffic.rate_limit_key", item, exp);
                            ok = false;
                        }
                    },
                    _ => {
                        self.expected("traffic.rate_limit_key", item, values::RATE_LIMIT_KEY_EXPECTED);
                        ok = false;
                    }
                },
                "rate_limit_burst" => {
                    out.rate_limit_burst =
                        self.integer("traffic.rate_limit_burst", item, 1, 1_000_000).map(|n| n as u32);
                    ok &= out.rate_limit_burst.is_some();
                }
                "script" => {
                    out.script = self.repo_path("traffic.script", item, Some(".lua"));
                    ok &= out.script.is_some();
                }
                "headers" => match self.headers("traffic.headers", item) {
                    Some(h) => out.headers = h,
                    None => ok = false,
                },
                "response_headers" => match self.headers("traffic.response_headers", item) {
                    Some(h) => out.response_headers = h,
                    None => ok = false,
                },
                _ => {
                    self.unknown_key("traffic", key, &known);
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    }

    fn headers(&mut self, at: &str, item: &Item<'_>) -> Option<Headers> {
        let t = self.table(at, item)?;
        let mut out = Headers::default();
        let mut ok = true;
        for (key, item) in t.iter() {
            match key.get_ref().as_ref() {
                "set" => {
                    let Some(set) = self.table(&format!("{at}.set"), item) else {
                        ok = false;
                        continue;
                    };
                    for (name, value) in set.iter() {
                        let n = name.get_ref().as_ref();
                        let path = format!("{at}.set.{n}");
                        if !self.header_name(&path, name) {
                            ok = false;
                            continue;
                        }
                        match value.get_ref() {
                            DeValue::String(s) if !s.contains(['\r', '\n']) => {
                                out.set.insert(n.to_string(), s.to_string());
                            }
                            _ => {
                                self.expected(&path, value, "a header value: a string without line breaks");
                                ok = false;
                            }
                        }
                    }
                }
                "remove" => {
                    let DeValue::Array(arr) = item.get_ref() else {
                        self.expected(&format!("{at}.remove"), item, "an array of header names");
                        ok = false;
                        continue;
                    };
                    for (i, el) in arr.iter().enumerate() {
                        let path = format!("{at}.remove[{i}]");
                        match el.get_ref() {
                            DeValue::String(s) if values::is_header_name(s) => {
                                if RESERVED_HEADERS.contains(&s.to_ascii_lowercase().as_str()) {
                                    self.expected(&path, el, "a header the router does not own (not Host, Content-Length, Transfer-Encoding or Connection)");
                                    ok = false;
                                } else {
                                    out.remove.push(s.to_string());
                                }
                            }
                            _ => {
                                self.expected(&path, el, "an HTTP header name like \"X-Debug\"");
                                ok = false;
                            }
                        }
                    }
                }
                _ => {
                    self.unknown_key(at, key, &["set", "remove"]);
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    }

    fn header_name(&mut self, path: &str, name: &Spanned<std::borrow::Cow<'_, str>>) -> bool {
        let n = name.get_ref().as_ref();
        let (good, expected) = if !values::is_header_name(n) {
            (false, "an HTTP header name like \"X-Request-Source\"")
        } else if RESERVED_HEADERS.contains(&n.to_ascii_lowercase().as_str()) {
            (false, "a header the router does not own (not Host, Content-Length, Transfer-Encoding or Connection)")
        } else {
            (true, "")
        };
        if !good {
            self.push(
                name.span(),
                path,
                format!("{path}: expected {expected}, found {n:?}"),
                Some(expected.into()),
                Some(n.to_string()),
                None,
            );
        }
        good
    }
}

/// The closest candidate by Jaro-Winkler similarity, if it is close enough.
pub(crate) fn did_you_mean<'a>(input: &str, candidates: impl Iterator<Item = &'a str>) -> Option<String> {
    candidates
        .map(|c| (strsim::jaro_winkler(input, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c.to_string())
}

/// Where the value of `section.key` is written in `source` (1-based), if it is.
pub(crate) fn locate(source: &str, section: &str, key: &str) -> Option<(u32, u32)> {
    let root = DeTable::parse(source).ok()?;
    let (_, sec) = root.get_ref().iter().find(|(k, _)| k.get_ref().as_ref() == section)?;
    let DeValue::Table(t) = sec.get_ref() else {
        return None;
    };
    let (_, v) = t.iter().find(|(k, _)| k.get_ref().as_ref() == key)?;
    Some(Validator::new(source).position(v.span().start))
}
